//! `LockTable::resources_page` against the full listing: following the pages (each starting
//! after the last name of the one before) gives exactly the sorted `resources` filtered by
//! prefix and holder node, whatever the names, prefix, node and page size.

use std::collections::BTreeSet;

use locksmith_core::{Acquire, Effects, LockTable, Now, Owner, Trusted};
use proptest::prelude::*;

mod common;

use common::{granted, table};

fn t(ms: u64) -> Now {
    Now::at(ms, 1_700_000_000_000 + ms)
}

fn hold(table: &mut LockTable, resource: &str, n: u32) {
    hold_slot(table, resource, n, 1);
}

/// Grants holder `n` (pid 1000 + n, on `node_of(n)`) a slot of an `slots`-slot `resource`.
fn hold_slot(table: &mut LockTable, resource: &str, n: u32, slots: u32) {
    let owner = Owner {
        node: node_of(n).to_string(),
        pid: 1_000 + n,
        start_time: 7,
        boot_id: "boot-1".to_string(),
        user: "ops".to_string(),
        purpose: "pages".to_string(),
        pid_ns: None,
    };
    let req = Acquire {
        resource: resource.to_string(),
        owner,
        ttl_ms: 10_000,
        slots,
        wait_ms: 0,
        lock_delay_ms: 0,
        trusted: Trusted::NONE,
    };
    let mut fx = Effects::new();
    granted(table.acquire(req, t(0), &mut fx));
}

/// Holder `n` runs on one of three nodes.
fn node_of(n: u32) -> &'static str {
    ["node-0", "node-1", "node-2"][(n % 3) as usize]
}

/// Every page, in order, following `next` until the last: the names per page.
fn all_pages(
    table: &LockTable,
    prefix: &str,
    limit: usize,
    node: Option<&str>,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = table.resources_page(t(1), prefix, after.as_deref(), limit, node);
        let names: Vec<String> = page.into_iter().map(|v| v.resource).collect();
        after = names.last().cloned();
        let last = !more;
        pages.push(names);
        if last {
            return pages;
        }
        assert!(after.is_some(), "a page that says more follow is not empty");
    }
}

#[test]
fn an_empty_table_is_one_empty_last_page() {
    let table = table();
    assert_eq!(all_pages(&table, "", 10, None), vec![Vec::<String>::new()]);
}

#[test]
fn pages_split_at_the_limit_and_the_last_one_says_so() {
    let mut table = table();
    for (i, name) in ["b", "a", "c", "e", "d"].iter().enumerate() {
        hold(&mut table, name, i as u32);
    }
    assert_eq!(
        all_pages(&table, "", 2, None),
        vec![vec!["a", "b"], vec!["c", "d"], vec!["e"]]
    );
    // A page that ends exactly at the last name says no more follow.
    let (page, more) = table.resources_page(t(1), "", Some("c"), 2, None);
    assert_eq!(page.len(), 2);
    assert!(!more);
}

proptest! {
    #[test]
    fn following_the_pages_lists_exactly_the_sorted_prefixed_resources(
        names in proptest::collection::btree_set("[ab]{1,2}(/[a-c]{1,3})?", 0..40),
        prefix in "[ab]{0,2}/?",
        limit in 1usize..8,
        node in proptest::option::of(0u32..4),
    ) {
        let mut table = table();
        for (i, name) in names.iter().enumerate() {
            hold(&mut table, name, i as u32);
        }
        // node 3 holds nothing.
        let node = node.map(|n| if n < 3 { node_of(n) } else { "node-3" });
        let pages = all_pages(&table, &prefix, limit, node);
        for (i, page) in pages.iter().enumerate() {
            prop_assert!(page.len() <= limit);
            if i + 1 < pages.len() {
                prop_assert_eq!(page.len(), limit, "only the last page is short");
            }
        }
        let listed: Vec<String> = pages.into_iter().flatten().collect();
        let expected: Vec<String> = table
            .resources(t(1))
            .into_iter()
            .filter(|v| node.is_none_or(|node| v.holders.iter().any(|h| h.owner.node == node)))
            .map(|v| v.resource)
            .filter(|n| n.starts_with(&prefix))
            .collect();
        let model: Vec<String> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| node.is_none_or(|node| node_of(*i as u32) == node))
            .map(|(_, n)| n)
            .filter(|n| n.starts_with(&prefix))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        prop_assert_eq!(&listed, &expected);
        prop_assert_eq!(&listed, &model);
    }
}

#[test]
fn a_semaphore_with_two_holders_on_the_node_is_listed_once() {
    let mut table = table();
    // Holders 1 and 4 both run on node-1.
    for n in [1, 4] {
        hold_slot(&mut table, "reboot/slots", n, 2);
    }
    hold(&mut table, "other", 2);
    let (page, more) = table.resources_page(t(1), "", None, 10, Some("node-1"));
    let names: Vec<&str> = page.iter().map(|v| v.resource.as_str()).collect();
    assert_eq!(names, ["reboot/slots"]);
    assert_eq!(page[0].holders.len(), 2);
    assert!(!more);
}
