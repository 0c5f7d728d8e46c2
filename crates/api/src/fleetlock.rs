//! How a FleetLock reboot slot's holder looks in the API. A FleetLock client (Zincati) is not a
//! process on a host: the server gives its slot a synthetic owner — node = the client id, and
//! fixed placeholders for the rest — so that listings, the audit trail and the CLI can tell it
//! from a process (no pid to check, no heartbeats, usually no TTL).

use locksmith_core::Owner;

/// The placeholder pid of every FleetLock holder.
pub const OWNER_PID: u32 = 1;
/// The placeholder start time of every FleetLock holder.
pub const OWNER_START_TIME: u64 = 1;
/// The boot id of every FleetLock holder: a label, never a real boot id (those are UUIDs).
pub const OWNER_BOOT_ID: &str = "fleetlock";
/// The user of every FleetLock holder.
pub const OWNER_USER: &str = "fleetlock";

/// The synthetic owner of client `id`'s slot in reboot group `group`.
pub fn owner(id: &str, group: &str) -> Owner {
    Owner {
        node: id.to_string(),
        pid: OWNER_PID,
        start_time: OWNER_START_TIME,
        boot_id: OWNER_BOOT_ID.to_string(),
        user: OWNER_USER.to_string(),
        purpose: format!("fleetlock reboot group {group}"),
        pid_ns: None,
    }
}

/// Whether `owner` is a FleetLock client's synthetic owner (its node is the client id).
pub fn is_client(owner: &Owner) -> bool {
    owner.boot_id == OWNER_BOOT_ID && owner.user == OWNER_USER && owner.pid == OWNER_PID
}
