//! `LockTable::resources_page` against the full listing: following the pages (each starting
//! after the last name of the one before) gives exactly the sorted, prefix-filtered
//! `resources`, whatever the names, prefix and page size.

use std::collections::BTreeSet;

use locksmith_core::{Acquire, Effects, LockTable, Now, Owner, Trusted};
use proptest::prelude::*;

mod common;

use common::{granted, table};

fn t(ms: u64) -> Now {
    Now::at(ms, 1_700_000_000_000 + ms)
}

fn hold(table: &mut LockTable, resource: &str, n: u32) {
    let owner = Owner {
        node: "node-1".to_string(),
        pid: 1_000 + n,
        start_time: 7,
        boot_id: "boot-1".to_string(),
        user: "ops".to_string(),
        purpose: "pages".to_string(),
    };
    let req = Acquire {
        resource: resource.to_string(),
        owner,
        ttl_ms: 10_000,
        slots: 1,
        wait_ms: 0,
        lock_delay_ms: 0,
        trusted: Trusted::NONE,
    };
    let mut fx = Effects::new();
    granted(table.acquire(req, t(0), &mut fx));
}

/// Every page, in order, following `next` until the last: the names per page.
fn all_pages(table: &LockTable, prefix: &str, limit: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = table.resources_page(t(1), prefix, after.as_deref(), limit);
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
    assert_eq!(all_pages(&table, "", 10), vec![Vec::<String>::new()]);
}

#[test]
fn pages_split_at_the_limit_and_the_last_one_says_so() {
    let mut table = table();
    for (i, name) in ["b", "a", "c", "e", "d"].iter().enumerate() {
        hold(&mut table, name, i as u32);
    }
    assert_eq!(
        all_pages(&table, "", 2),
        vec![vec!["a", "b"], vec!["c", "d"], vec!["e"]]
    );
    // A page that ends exactly at the last name says no more follow.
    let (page, more) = table.resources_page(t(1), "", Some("c"), 2);
    assert_eq!(page.len(), 2);
    assert!(!more);
}

proptest! {
    #[test]
    fn following_the_pages_lists_exactly_the_sorted_prefixed_resources(
        names in proptest::collection::btree_set("[ab]{1,2}(/[a-c]{1,3})?", 0..40),
        prefix in "[ab]{0,2}/?",
        limit in 1usize..8,
    ) {
        let mut table = table();
        for (i, name) in names.iter().enumerate() {
            hold(&mut table, name, i as u32);
        }
        let pages = all_pages(&table, &prefix, limit);
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
            .map(|v| v.resource)
            .filter(|n| n.starts_with(&prefix))
            .collect();
        let model: Vec<String> = names
            .iter()
            .filter(|n| n.starts_with(&prefix))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        prop_assert_eq!(&listed, &expected);
        prop_assert_eq!(&listed, &model);
    }
}
