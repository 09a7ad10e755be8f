//! Several files under one budget: every download gets a clone of one `ConnectionBudget`
//! (so all of them together hold at most `-c` connections) and of one `RateLimit` (so all of
//! them together stay under the cap, which can change while they run).
//!
//! ```text
//! cargo run -p rangefetch-core --example batch -- DIR URL...
//! ```

use rangefetch_core::{Config, ConnectionBudget, Download, RateLimit};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: batch DIR URL...");
        std::process::exit(2);
    };
    let urls: Vec<String> = args.collect();
    let budget = ConnectionBudget::new(8, 4);
    // 0 is no limit; `limit.set_rate(..)` from anywhere changes it for all of them.
    let limit = RateLimit::new(0);
    let config = Config::default()
        .connections(4)
        .budget(budget.clone())
        .rate_limit(limit.clone());
    let mut runs = tokio::task::JoinSet::new();
    for (index, url) in urls.iter().enumerate() {
        let download = Download::builder(url.as_str())
            .config(config.clone())
            .output(format!("{dir}/file-{index}"))
            .build()?;
        runs.spawn(async move { (index, download.run().await) });
    }
    let mut failed = 0;
    while let Some(joined) = runs.join_next().await {
        match joined? {
            (index, Ok(outcome)) => println!("file {index}: {} {}", outcome.sha256, outcome.bytes),
            (index, Err(error)) => {
                failed += 1;
                eprintln!("file {index}: {error}");
            }
        }
    }
    println!(
        "{} files, {failed} failed, budget free again: {}",
        urls.len(),
        budget.available()
    );
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
