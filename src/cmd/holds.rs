//! The operator's tools: `hold` (freeze a resource for a bounded time, optionally only once a
//! second operator acknowledges it), `ack`, `unhold`, and `break` — the safe bypass that
//! freezes, revokes the lease, advances the fence and audits who did it and why.

use locksmith_api::{BreakRequest, BreakResponse, HoldRequest, format_age, format_wall};
use locksmith_core::{HoldId, HoldState, HoldView, LeaseId};

use crate::cli::{BreakArgs, Global, HoldArgs, HoldIdArgs};
use crate::exit::Exit;
use crate::failure::{Context, Failure};
use crate::output::{out, out_json};

pub async fn hold(global: &Global, args: HoldArgs) -> anyhow::Result<Exit> {
    let resource = args.resource.as_str();
    super::check_resource(resource)?;
    let reason = super::require_reason(resource, &args.reason)?;
    if args.duration.is_zero() {
        return Err(Failure::invalid(
            resource,
            "--for",
            "must be more than 0",
            "say how long to freeze it, e.g. --for 90s",
        )
        .into());
    }
    let operator = super::operator(global)?;
    let ctx = Context {
        subject: resource,
        wait_flag: "--wait",
    };
    let req = HoldRequest {
        resource: resource.to_string(),
        operator,
        reason,
        duration_ms: super::millis(args.duration),
        require_ack: args.require_ack,
    };
    let view = super::client(global, ctx)?
        .hold(&req)
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;
    if args.json {
        out_json(&view)?;
    } else {
        out(&placed_line(&view))?;
    }
    Ok(Exit::Ok)
}

/// `hold 12 on res: FROZEN for 1m30s — "reason"`, or `… PENDING ACK — run 'locksmith ack 12' …`.
fn placed_line(view: &HoldView) -> String {
    let rec = &view.record;
    match view.state {
        HoldState::Active => format!(
            "hold {} on {}: FROZEN for {} — {:?}",
            rec.hold,
            rec.resource,
            format_age(rec.duration_ms),
            rec.reason
        ),
        HoldState::PendingAck => format!(
            "hold {} on {}: PENDING ACK — run 'locksmith ack {}' as a different operator",
            rec.hold, rec.resource, rec.hold
        ),
    }
}

pub async fn ack(global: &Global, args: HoldIdArgs) -> anyhow::Result<Exit> {
    let subject = format!("hold {}", args.hold);
    let ctx = Context {
        subject: &subject,
        wait_flag: "--wait",
    };
    let operator = super::operator(global)?;
    let view = super::client(global, ctx)?
        .ack_hold(HoldId(args.hold), &operator)
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;
    if args.json {
        out_json(&view)?;
    } else {
        let rec = &view.record;
        // Who the server recorded: with authentication on, the token's name, whatever
        // --operator said.
        let by = rec.acked_by.as_deref().unwrap_or(operator.as_str());
        out(&format!(
            "hold {} on {}: acknowledged by {by} — FROZEN for {} — {:?}",
            rec.hold,
            rec.resource,
            format_age(view.ends_in_ms),
            rec.reason
        ))?;
    }
    Ok(Exit::Ok)
}

pub async fn unhold(global: &Global, args: HoldIdArgs) -> anyhow::Result<Exit> {
    let subject = format!("hold {}", args.hold);
    let ctx = Context {
        subject: &subject,
        wait_flag: "--wait",
    };
    let operator = super::operator(global)?;
    let view = super::client(global, ctx)?
        .lift_hold(HoldId(args.hold), &operator)
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;
    if args.json {
        out_json(&view)?;
    } else {
        // Not "by --operator": with authentication on the server records the token's name,
        // which the answer does not carry.
        let rec = &view.record;
        out(&format!(
            "hold {} on {}: lifted (placed by {}: {:?})",
            rec.hold, rec.resource, rec.by, rec.reason
        ))?;
    }
    Ok(Exit::Ok)
}

pub async fn break_lock(global: &Global, args: BreakArgs) -> anyhow::Result<Exit> {
    let resource = args.resource.as_str();
    super::check_resource(resource)?;
    let reason = super::require_reason(resource, &args.reason)?;
    let operator = super::operator(global)?;
    let ctx = Context {
        subject: resource,
        wait_flag: "--wait",
    };
    let req = BreakRequest {
        resource: resource.to_string(),
        lease: args.lease.map(LeaseId),
        operator,
        reason,
        freeze_ms: Some(super::millis(args.freeze)),
    };
    let broke = super::client(global, ctx)?
        .break_lock(&req)
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;
    if args.json {
        out_json(&broke)?;
    } else {
        out(&break_lines(&broke))?;
    }
    Ok(Exit::Ok)
}

/// What a break did, in three lines or more: each lease revoked, the new fence, the freeze.
fn break_lines(broke: &BreakResponse) -> String {
    let mut lines: Vec<String> = broke
        .revoked
        .iter()
        .map(|h| {
            format!(
                "broke {}: revoked lease {} (token {}) of {} — purpose {:?}, held since {}",
                broke.resource,
                h.lease,
                h.token,
                h.owner,
                h.owner.purpose,
                format_wall(h.granted_at_ms)
            )
        })
        .collect();
    if lines.is_empty() {
        lines.push(format!("broke {}: no lease was held", broke.resource));
    }
    lines.push(format!(
        "fence is now {}: writes carrying an older token are refused",
        broke.fence
    ));
    lines.push(match &broke.hold {
        Some(h) => format!(
            "frozen by hold {} for {} — lift it early with 'locksmith unhold {}'",
            h.record.hold,
            format_age(h.record.duration_ms),
            h.record.hold
        ),
        None => "not frozen (--freeze 0): the next acquirer may take it at once".to_string(),
    });
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use locksmith_core::{FenceToken, HoldRecord, HolderView, Owner};

    fn hold_view(state: HoldState) -> HoldView {
        HoldView {
            record: HoldRecord {
                hold: HoldId(12),
                resource: "res".into(),
                reason: "clearing a stale lock".into(),
                by: "alice@ops".into(),
                placed_at_ms: 0,
                duration_ms: 90_000,
                require_ack: state == HoldState::PendingAck,
                acked_by: None,
                active_since_ms: None,
            },
            state,
            ends_in_ms: 89_990,
        }
    }

    #[test]
    fn a_placed_hold_reads_frozen_or_pending() {
        assert_eq!(
            placed_line(&hold_view(HoldState::Active)),
            "hold 12 on res: FROZEN for 1m30s — \"clearing a stale lock\""
        );
        assert_eq!(
            placed_line(&hold_view(HoldState::PendingAck)),
            "hold 12 on res: PENDING ACK — run 'locksmith ack 12' as a different operator"
        );
    }

    #[test]
    fn a_break_names_the_revoked_lease_the_fence_and_the_freeze() {
        let broke = BreakResponse {
            resource: "res".into(),
            revoked: vec![HolderView {
                lease: LeaseId(7),
                token: FenceToken(7),
                owner: Owner {
                    node: "node-7".into(),
                    pid: 4121,
                    start_time: 1,
                    boot_id: "b".into(),
                    user: "orchestrator".into(),
                    purpose: "update".into(),
                    pid_ns: None,
                },
                granted_at_ms: 0,
                last_heartbeat_ms: 0,
                ttl_ms: 15_000,
                ttl_left_ms: 0,
                stale: true,
            }],
            fence: FenceToken(13),
            hold: Some(hold_view(HoldState::Active)),
        };
        let text = break_lines(&broke);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with(
                "broke res: revoked lease 7 (token 7) of orchestrator@node-7 (pid 4121)"
            ),
            "{text}"
        );
        assert_eq!(
            lines[1],
            "fence is now 13: writes carrying an older token are refused"
        );
        assert_eq!(
            lines[2],
            "frozen by hold 12 for 1m30s — lift it early with 'locksmith unhold 12'"
        );
    }
}
