//! The scenario builder: a `rangefetch get` test states its file, faults, arguments and
//! expectation, and the builder does the plumbing (start the test server, make a directory,
//! run the binary against the server, [`check`] the run):
//!
//! ```ignore
//! let (size, cut) = (4 * MIB, 300_000);
//! let run = Scenario::new(FileSpec::new("/img.bin", size, 101))
//!     .faults(vec![FaultRule::new(
//!         When::RangeStartsAt(MIB).times(1),
//!         Fault::ResetAfter { bytes: cut },
//!     )])
//!     .args(&["--chunk-size", "1MiB"])
//!     .expect(Expect::success_of_file().served(size..=size + cut).ranged());
//! assert_eq!(asked_from(&run, MIB).len(), 1, "\n{}", run.describe());
//! ```
//!
//! The command is `get URL ARGS…`, where URL is the scenario's server and path (or the URL
//! given to [`Scenario::url`]); the output checked is `-o`'s argument when ARGS has one, else
//! the URL's last path segment, in the run's directory. [`Scenario::on`] runs against a server
//! the test keeps, [`Scenario::in_dir`] in a directory it keeps (to resume there), and
//! [`Scenario::spawn`] hands back the running process (to interrupt it).

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

use rangefetch_testserver::{FaultRule, FaultScript, FileSpec, ServerConfig, TestServer};

use super::binary::{Run, Running, spawn_env};
use super::check::{Expect, check};
use super::files::tempdir;

/// One `rangefetch get` run to set up, run and check; see the module documentation.
pub struct Scenario<'s> {
    target: Target<'s>,
    /// The file whose SHA-256 [`Expect::success_of_file`] means.
    file: Option<FileSpec>,
    path: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: Option<&'s Path>,
    local_files: Vec<(String, Vec<u8>)>,
}

/// Where the run's URL points.
enum Target<'s> {
    /// A server the scenario starts for these files and fault rules, and hands back in
    /// [`Ran::server`].
    Own {
        files: Vec<FileSpec>,
        rules: Vec<FaultRule>,
        seed: Option<u64>,
    },
    /// A server the test keeps (to run twice, or to change its script between runs).
    Shared(&'s TestServer),
    /// A URL on no test server (nginx, a closed port): nothing is recorded.
    Url(String),
}

impl<'s> Scenario<'s> {
    /// A fresh test server for `file` (without faults unless [`Scenario::faults`] adds some);
    /// the run gets the file's path.
    pub fn new(file: FileSpec) -> Self {
        let path = file.path.clone();
        Self::with_target(
            Target::Own {
                files: vec![file.clone()],
                rules: Vec::new(),
                seed: None,
            },
            Some(file),
            path,
        )
    }

    /// A run against `server`, which the test keeps, for `path`; [`Expect::success_of_file`]
    /// means the file `server` serves there now.
    pub fn on(server: &'s TestServer, path: &str) -> Self {
        Self::with_target(Target::Shared(server), server.file(path), path.to_owned())
    }

    /// A run of `get url` with no test server to record: nginx, or a port nobody listens on.
    pub fn url(url: impl Into<String>) -> Self {
        let url = url.into();
        let path = url
            .split(['?', '#'])
            .next()
            .and_then(|url| url.rsplit_once('/'))
            .map(|(_, name)| format!("/{name}"))
            .unwrap_or_default();
        Self::with_target(Target::Url(url), None, path)
    }

    fn with_target(target: Target<'s>, file: Option<FileSpec>, path: String) -> Self {
        Self {
            target,
            file,
            path,
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            local_files: Vec::new(),
        }
    }

    /// Another file on the scenario's server.
    pub fn also_serve(mut self, file: FileSpec) -> Self {
        match &mut self.target {
            Target::Own { files, .. } => files.push(file),
            _ => panic!("also_serve needs a server the scenario starts (Scenario::new)"),
        }
        self
    }

    /// The fault rules of the scenario's server.
    pub fn faults(mut self, fault_rules: Vec<FaultRule>) -> Self {
        match &mut self.target {
            Target::Own { rules, .. } => *rules = fault_rules,
            _ => panic!("faults needs a server the scenario starts (Scenario::new)"),
        }
        self
    }

    /// The seed of the fault script (random cuts); 0 without it.
    pub fn fault_seed(mut self, fault_seed: u64) -> Self {
        match &mut self.target {
            Target::Own { seed, .. } => *seed = Some(fault_seed),
            _ => panic!("fault_seed needs a server the scenario starts (Scenario::new)"),
        }
        self
    }

    /// Requests `path` on the server instead of the file's own path (a redirect, a 404).
    pub fn path(mut self, path: &str) -> Self {
        path.clone_into(&mut self.path);
        self
    }

    /// Arguments after `get URL`; each call appends.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|arg| (*arg).to_owned()));
        self
    }

    /// An environment variable added to the binary's clean environment.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs in `dir` (which the test keeps: to resume there, or to look at it afterwards)
    /// instead of a fresh directory.
    pub fn in_dir(mut self, dir: &'s Path) -> Self {
        self.dir = Some(dir);
        self
    }

    /// A file written into the run's directory before the run: a checksum file, a CA file, an
    /// older output.
    pub fn local_file(mut self, name: &str, contents: impl AsRef<[u8]>) -> Self {
        self.local_files
            .push((name.to_owned(), contents.as_ref().to_vec()));
        self
    }

    /// Runs, then checks the run against `expect` ([`Expect::success_of_file`] meaning the
    /// scenario's file); returns the run for further assertions.
    pub fn expect(self, expect: Expect) -> Ran {
        self.run().expect(expect)
    }

    /// Runs without checking anything.
    pub fn run(self) -> Ran {
        match self.target {
            Target::Own {
                ref files,
                ref rules,
                seed,
            } => {
                let mut faults = FaultScript::new(rules.clone());
                if let Some(seed) = seed {
                    faults = faults.with_seed(seed);
                }
                let server = TestServer::start(ServerConfig {
                    files: files.clone(),
                    faults,
                });
                let ran = self.spawn_against(Some(&server)).wait();
                Ran {
                    server: Some(server),
                    ..ran
                }
            }
            _ => self.spawn().wait(),
        }
    }

    /// Starts the run and returns it while it runs (to interrupt it, or to change the server
    /// meanwhile). Needs a server the test keeps ([`Scenario::on`]) or none
    /// ([`Scenario::url`]), since the running process is recorded against it.
    pub fn spawn(self) -> Spawned<'s> {
        let server = match self.target {
            Target::Own { .. } => {
                panic!("Scenario::spawn needs a server the test keeps: use Scenario::on")
            }
            Target::Shared(server) => Some(server),
            Target::Url(_) => None,
        };
        self.spawn_against(server)
    }

    fn spawn_against<'a>(&self, server: Option<&'a TestServer>) -> Spawned<'a> {
        let url = match (&self.target, server) {
            (Target::Url(url), _) => url.clone(),
            (_, Some(server)) => server.url(&self.path),
            (_, None) => unreachable!("a server target has a server"),
        };
        let fresh = match self.dir {
            Some(_) => None,
            None => Some(tempdir()),
        };
        let dir = self
            .dir
            .map(Path::to_owned)
            .or_else(|| fresh.as_ref().map(|fresh| fresh.path().to_owned()))
            .expect("a directory, given or fresh");
        for (name, contents) in &self.local_files {
            std::fs::write(dir.join(name), contents)
                .unwrap_or_else(|error| panic!("write {name} into the run's directory: {error}"));
        }
        let out = dir.join(self.output_name());
        let mut args = vec!["get", url.as_str()];
        args.extend(self.args.iter().map(String::as_str));
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        Spawned {
            running: spawn_env(&dir, &args, server, &env),
            out,
            dir: fresh,
            file: self.file.clone(),
        }
    }

    /// `-o`'s argument, else the requested path's last segment.
    fn output_name(&self) -> PathBuf {
        let explicit = self
            .args
            .iter()
            .position(|arg| arg == "-o" || arg == "--output")
            .and_then(|idx| self.args.get(idx + 1));
        match explicit {
            Some(out) => PathBuf::from(out),
            None => {
                let name = self.path.rsplit('/').next().unwrap_or_default();
                assert!(
                    !name.is_empty(),
                    "no output name in {:?}: give the scenario `-o`",
                    self.path
                );
                PathBuf::from(name)
            }
        }
    }
}

/// `expect` with the SHA-256 of `file` filled in, if it asks for it.
fn resolve(expect: Expect, file: Option<&FileSpec>) -> Expect {
    if !expect.wants_sha256_of_file() {
        return expect;
    }
    let file = file.unwrap_or_else(|| {
        panic!("Expect::success_of_file needs a scenario with a file (Scenario::new or ::on)")
    });
    expect.with_sha256_of_file(file.sha256_hex())
}

/// A scenario's process while it runs; it derefs to its [`Running`] (to wait for something,
/// signal or kill it).
pub struct Spawned<'s> {
    running: Running<'s>,
    out: PathBuf,
    dir: Option<tempfile::TempDir>,
    file: Option<FileSpec>,
}

impl Spawned<'_> {
    /// The output file's path.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Waits for the exit.
    pub fn wait(self) -> Ran {
        Ran {
            run: self.running.wait(),
            out: self.out,
            file: self.file,
            server: None,
            _dir: self.dir,
        }
    }

    /// Waits for the exit and checks the run against `expect`.
    pub fn expect(self, expect: Expect) -> Ran {
        self.wait().expect(expect)
    }

    /// SIGKILLs the process and collects what it did.
    pub fn kill(self) -> Ran {
        Ran {
            run: self.running.kill(),
            out: self.out,
            file: self.file,
            server: None,
            _dir: self.dir,
        }
    }
}

impl<'s> Deref for Spawned<'s> {
    type Target = Running<'s>;

    fn deref(&self) -> &Running<'s> {
        &self.running
    }
}

impl<'s> DerefMut for Spawned<'s> {
    fn deref_mut(&mut self) -> &mut Running<'s> {
        &mut self.running
    }
}

/// A finished scenario: the [`Run`] (which it derefs to), the output path it was checked at,
/// and the server the scenario started. The run's directory lives as long as this does.
pub struct Ran {
    /// The finished run.
    pub run: Run,
    /// The output file's path.
    pub out: PathBuf,
    file: Option<FileSpec>,
    server: Option<TestServer>,
    _dir: Option<tempfile::TempDir>,
}

impl Ran {
    /// The server the scenario started ([`Scenario::new`]).
    pub fn server(&self) -> &TestServer {
        self.server
            .as_ref()
            .expect("only a scenario from Scenario::new starts a server of its own")
    }

    /// Checks the run against `expect` ([`Expect::success_of_file`] meaning the scenario's
    /// file); returns it for further assertions.
    pub fn expect(self, expect: Expect) -> Ran {
        check(&self.run, &self.out, &resolve(expect, self.file.as_ref()));
        self
    }
}

impl Deref for Ran {
    type Target = Run;

    fn deref(&self) -> &Run {
        &self.run
    }
}
