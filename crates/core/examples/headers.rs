//! Custom request headers: a bearer token for a private registry and a User-Agent of the
//! embedding program's own. The token goes only to the URL's host (never to another host a
//! redirect leads to) and never appears in an event, an error or the resume journal.
//!
//! ```text
//! REGISTRY_TOKEN=... cargo run -p rangefetch-core --example headers -- URL OUTPUT
//! ```

use rangefetch_core::{Download, Event};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(output)) = (args.next(), args.next()) else {
        eprintln!("usage: headers URL OUTPUT (token in REGISTRY_TOKEN)");
        std::process::exit(2);
    };
    // The engine reads no environment; the program decides where a token comes from.
    let token = std::env::var("REGISTRY_TOKEN").unwrap_or_default();
    let download = Download::builder(url)
        .output(output)
        .header("Authorization", format!("Bearer {token}"))
        .header("X-Client", "vm-manager")
        .user_agent("vm-manager/1.0 (rangefetch)")
        .on_event(|event| {
            if let Event::Started { url, total, .. } = event {
                println!("started {url} ({total:?} bytes)");
            }
        })
        .build()?;
    let outcome = download.run().await?;
    println!("{}  {}", outcome.sha256, outcome.path.display());
    Ok(())
}
