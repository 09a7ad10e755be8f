//! Redirects: followed once with every range sent to the target, a loop given up on, and an
//! expired ("presigned") target re-resolved from the original URL.

use std::time::Duration;

use rangefetch_testserver::{Fault, FaultRule, FileSpec, When};

use super::gets;
use crate::support::{Expect, MIB, Scenario};

#[test]
fn redirect_is_followed_once_and_ranges_go_to_the_target() {
    let size = 4 * MIB;
    let run = Scenario::new(FileSpec::new("/img.bin", size, 121))
        .faults(vec![
            FaultRule::always(Fault::Redirect {
                status: 301,
                location: "/img.bin".to_owned(),
            })
            .on_path("/old.bin"),
        ])
        .path("/old.bin")
        .args(&["-o", "img.bin", "--chunk-size", "1MiB"])
        .expect(Expect::success_of_file().served(size..=size).covers(size));
    let requests = gets(&run);
    assert_eq!(requests[0].path, "/old.bin", "\n{}", run.describe());
    assert_eq!(requests[0].status, 301, "\n{}", run.describe());
    assert!(
        requests[1..]
            .iter()
            .all(|request| request.path == "/img.bin"),
        "only the first request may go to the old URL\n{}",
        run.describe()
    );
    assert!(
        requests[2..]
            .iter()
            .all(|request| request.if_range.is_some()),
        "a range request to the target without If-Range\n{}",
        run.describe()
    );
}

#[test]
fn redirect_loop_fails_after_at_most_ten_hops() {
    let run = Scenario::new(FileSpec::new("/img.bin", MIB, 122))
        .faults(vec![
            FaultRule::always(Fault::Redirect {
                status: 302,
                location: "/loop.bin".to_owned(),
            })
            .on_path("/loop.bin"),
        ])
        .path("/loop.bin")
        .expect(
            Expect::failure(1)
                .served(0..=0)
                .max_requests(12)
                .stderr_has("redirect"),
        );
    assert!(
        run.elapsed < Duration::from_secs(5),
        "a redirect loop is permanent, yet the run took {:?}\n{}",
        run.elapsed,
        run.describe()
    );
}

#[test]
fn expired_redirect_target_is_re_resolved_from_the_original_url() {
    // /old.bin first redirects to /a.bin, later to /b.bin (a fresh "presigned" URL for the same
    // object); /a.bin answers 403 once three requests have used it.
    let size = 8 * MIB;
    let a = FileSpec::new("/a.bin", size, 123);
    let b = FileSpec::new("/b.bin", size, 123);
    let run = Scenario::new(a)
        .also_serve(b)
        .faults(vec![
            FaultRule::new(
                When::Nth(0),
                Fault::Redirect {
                    status: 302,
                    location: "/a.bin".to_owned(),
                },
            )
            .on_path("/old.bin"),
            FaultRule::new(
                When::AfterN(1),
                Fault::Redirect {
                    status: 302,
                    location: "/b.bin".to_owned(),
                },
            )
            .on_path("/old.bin"),
            FaultRule::always(Fault::ForbiddenAfter { requests: 3 }).on_path("/a.bin"),
        ])
        .path("/old.bin")
        .args(&["-o", "img.bin", "--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size..=size + MIB)
                .covers(size),
        );
    let requests = gets(&run);
    let on = |path: &str| {
        requests
            .iter()
            .filter(|request| request.path == path)
            .count()
    };
    assert!(
        requests
            .iter()
            .any(|request| request.path == "/a.bin" && request.status == 403),
        "the scenario needs /a.bin to have expired\n{}",
        run.describe()
    );
    assert!(
        on("/old.bin") >= 2,
        "the original URL was not resolved again\n{}",
        run.describe()
    );
    assert!(
        requests
            .iter()
            .any(|request| request.path == "/b.bin" && request.status == 206),
        "no range came from the renewed target\n{}",
        run.describe()
    );
}
