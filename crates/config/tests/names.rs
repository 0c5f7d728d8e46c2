//! Config names: which are allowed, and the lock that guards each.

use locksmith_config::{InvalidName, MAX_NAME_LEN, resource_of, validate_name};

#[test]
fn the_allowed_set() {
    let longest = "a".repeat(MAX_NAME_LEN);
    for ok in [
        "aim_lock_config.conf",
        "a",
        "fleet/eu-west/limits.toml",
        "A-Z_0.9/x",
        ".hidden",
        "a..b",
        "v1.2.3/..x/x..",
        longest.as_str(),
    ] {
        assert_eq!(validate_name(ok), Ok(()), "{ok}");
    }
}

#[test]
fn characters_outside_the_set_are_refused_unicode_included() {
    for (bad, found) in [
        ("a b", ' '),
        ("a#1", '#'),
        ("a:b", ':'),
        ("a@b", '@'),
        ("a\\b", '\\'),
        ("a\nb", '\n'),
        ("конфиг", 'к'),
        ("cafe\u{301}", '\u{301}'),
    ] {
        assert_eq!(
            validate_name(bad),
            Err(InvalidName::Character {
                name: bad.to_owned(),
                found
            }),
            "{bad:?}"
        );
    }
}

#[test]
fn dot_segments_are_refused() {
    for (bad, segment) in [
        ("..", ".."),
        ("a/../b", ".."),
        ("a/..", ".."),
        ("./a", "."),
        ("a/./b", "."),
    ] {
        assert_eq!(
            validate_name(bad),
            Err(InvalidName::DotSegment {
                name: bad.to_owned(),
                segment: segment.to_owned()
            }),
            "{bad}"
        );
    }
}

#[test]
fn leading_slash_and_empty_segments_are_refused() {
    assert!(matches!(
        validate_name("/etc/x"),
        Err(InvalidName::LeadingSlash { .. })
    ));
    assert!(matches!(
        validate_name("/"),
        Err(InvalidName::LeadingSlash { .. })
    ));
    for bad in ["a//b", "a/", "a/b/"] {
        assert!(
            matches!(validate_name(bad), Err(InvalidName::EmptySegment { .. })),
            "{bad}"
        );
    }
    assert_eq!(validate_name(""), Err(InvalidName::Empty));
}

#[test]
fn length_is_capped_so_the_lock_name_fits() {
    assert_eq!(MAX_NAME_LEN, 247);
    for len in [MAX_NAME_LEN + 1, 255, 256] {
        assert_eq!(
            validate_name(&"a".repeat(len)),
            Err(InvalidName::TooLong {
                len,
                max: MAX_NAME_LEN
            })
        );
    }
    // Every valid name's lock is a valid resource.
    let longest = format!("{}/{}", "a".repeat(100), "b".repeat(MAX_NAME_LEN - 101));
    assert_eq!(validate_name(&longest), Ok(()));
    assert_eq!(
        locksmith_core::validate_resource(&resource_of(&longest)),
        Ok(())
    );
    assert_eq!(
        resource_of("aim_lock_config.conf"),
        "configs/aim_lock_config.conf"
    );
}

#[test]
fn messages_name_the_name_and_the_fix() {
    assert_eq!(
        validate_name("a b").map_err(|e| e.to_string()),
        Err(r#"config name "a b": ' ' is not allowed; use letters, digits and . _ - /"#.to_owned())
    );
    assert_eq!(
        validate_name(&"x".repeat(256)).map_err(|e| e.to_string()),
        Err("config name is 256 bytes; at most 247 are allowed".to_owned())
    );
}
