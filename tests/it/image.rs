//! `rangefetch image RELEASE`: a small simplestreams tree in the real format (an index, an
//! `image-downloads` products file with two releases on two arches, several versions and item
//! types, small image files whose sha256 and size are computed here), served by nginx; picked
//! by codename, version or alias, newest version, default and explicit ftype, `--print`, the
//! errors, and the clearsigned `.sjson` files with `--keyring`, checked before the image is
//! requested (nginx's access log shows it never was).

use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, EncryptionCaps, KeyType, SecretKeyParamsBuilder,
    SignedSecretKey,
};
use pgp::ser::Serialize as _;
use pgp::types::{KeyDetails as _, Password};
use serde_json::{Value, json};

use crate::support::{Nginx, NginxOptions, WRONG_SHA256, assert_exit, run, sha256_bytes, tempdir};

const PRODUCTS_PATH: &str = "streams/v1/com.ubuntu.cloud:released:download.json";

/// One image file of the tree: its path under the mirror, its bytes.
struct ImageFile {
    path: &'static str,
    bytes: Vec<u8>,
}

impl ImageFile {
    fn new(path: &'static str, seed: u64, size: usize) -> Self {
        let mut bytes = vec![0u8; size];
        rangefetch_testserver::fill(seed, 0, &mut bytes);
        Self { path, bytes }
    }

    fn sha256(&self) -> String {
        sha256_bytes(&self.bytes)
    }

    fn item(&self, ftype: &str) -> Value {
        json!({"ftype": ftype, "path": self.path, "sha256": self.sha256(),
               "size": self.bytes.len(), "md5": "00000000000000000000000000000000"})
    }
}

/// The images of the tree, by role.
struct Images {
    noble_old_disk: ImageFile,
    noble_new_disk: ImageFile,
    noble_new_xz: ImageFile,
    jammy_uefi: ImageFile,
    jammy_disk: ImageFile,
    noble_arm_disk: ImageFile,
}

const NOBLE_OLD: &str =
    "server/releases/noble/release-20240423/ubuntu-24.04-server-cloudimg-amd64.img";
const NOBLE_NEW_DISK: &str =
    "server/releases/noble/release-20240501.1/ubuntu-24.04-server-cloudimg-amd64.img";
const NOBLE_NEW_XZ: &str =
    "server/releases/noble/release-20240501.1/ubuntu-24.04-server-cloudimg-amd64.img.xz";

fn images() -> Images {
    Images {
        noble_old_disk: ImageFile::new(NOBLE_OLD, 1, 70_000),
        noble_new_disk: ImageFile::new(NOBLE_NEW_DISK, 2, 90_000),
        noble_new_xz: ImageFile::new(NOBLE_NEW_XZ, 3, 50_000),
        jammy_uefi: ImageFile::new(
            "server/releases/jammy/release-20240301/ubuntu-22.04-server-cloudimg-amd64-uefi1.img",
            4,
            60_000,
        ),
        jammy_disk: ImageFile::new(
            "server/releases/jammy/release-20240301/ubuntu-22.04-server-cloudimg-amd64.img",
            5,
            40_000,
        ),
        noble_arm_disk: ImageFile::new(
            "server/releases/noble/release-20240423/ubuntu-24.04-server-cloudimg-arm64.img",
            6,
            30_000,
        ),
    }
}

impl Images {
    fn all(&self) -> [&ImageFile; 6] {
        [
            &self.noble_old_disk,
            &self.noble_new_disk,
            &self.noble_new_xz,
            &self.jammy_uefi,
            &self.jammy_disk,
            &self.noble_arm_disk,
        ]
    }

    /// The products file, as Ubuntu's `com.ubuntu.cloud:released:download.json` lays it out.
    fn products(&self) -> Value {
        json!({
            "content_id": "com.ubuntu.cloud:released:download",
            "datatype": "image-downloads",
            "format": "products:1.0",
            "updated": "Wed, 01 May 2024 12:00:00 +0000",
            "license": "http://www.canonical.com/intellectual-property-policy",
            "creator": "Canonical",
            "products": {
                "com.ubuntu.cloud:server:24.04:amd64": {
                    "arch": "amd64", "os": "ubuntu", "release": "noble", "version": "24.04",
                    "aliases": "24.04,default,lts,n,noble", "release_codename": "Noble Numbat",
                    "release_title": "24.04 LTS", "support_eol": "2029-05-31", "supported": true,
                    "versions": {
                        "20240423": {"label": "release", "items": {
                            "disk1.img": self.noble_old_disk.item("disk1.img"),
                        }},
                        "20240501.1": {"label": "release", "items": {
                            "disk1.img": self.noble_new_disk.item("disk1.img"),
                            "img.xz": self.noble_new_xz.item("img.xz"),
                            "manifest": {"ftype": "manifest", "path": "server/noble.manifest",
                                         "sha256": WRONG_SHA256, "size": 10},
                        }},
                    },
                },
                "com.ubuntu.cloud:server:22.04:amd64": {
                    "arch": "amd64", "os": "ubuntu", "release": "jammy", "version": "22.04",
                    "aliases": "22.04,j,jammy", "release_codename": "Jammy Jellyfish",
                    "release_title": "22.04 LTS", "supported": true,
                    "versions": {"20240301": {"items": {
                        "disk1.img": self.jammy_disk.item("disk1.img"),
                        "uefi1.img": self.jammy_uefi.item("uefi1.img"),
                    }}},
                },
                "com.ubuntu.cloud:server:24.04:arm64": {
                    "arch": "arm64", "os": "ubuntu", "release": "noble", "version": "24.04",
                    "aliases": "24.04,default,lts,n,noble", "release_codename": "Noble Numbat",
                    "release_title": "24.04 LTS",
                    "versions": {"20240423": {"items": {
                        "disk1.img": self.noble_arm_disk.item("disk1.img"),
                    }}},
                },
            },
        })
    }
}

fn index(datatype: &str) -> Value {
    json!({
        "format": "index:1.0",
        "updated": "Wed, 01 May 2024 12:00:00 +0000",
        "index": {
            "com.ubuntu.cloud:released:aws": {
                "datatype": "image-ids", "format": "products:1.0",
                "path": "streams/v1/com.ubuntu.cloud:released:aws.json", "products": [],
            },
            "com.ubuntu.cloud:released:download": {
                "datatype": datatype, "format": "products:1.0", "path": PRODUCTS_PATH,
                "updated": "Wed, 01 May 2024 12:00:00 +0000",
                "products": ["com.ubuntu.cloud:server:24.04:amd64",
                             "com.ubuntu.cloud:server:22.04:amd64",
                             "com.ubuntu.cloud:server:24.04:arm64"],
            },
        },
    })
}

/// The tree on disk, before nginx serves it.
struct Tree {
    root: tempfile::TempDir,
}

impl Tree {
    fn new(images: &Images, products: &Value, index: &Value) -> Self {
        let tree = Tree { root: tempdir() };
        for image in images.all() {
            tree.write(image.path, &image.bytes);
        }
        tree.write("streams/v1/index.json", index.to_string().as_bytes());
        tree.write(PRODUCTS_PATH, products.to_string().as_bytes());
        tree
    }

    fn write(&self, path: &str, bytes: &[u8]) {
        let path = self.root.path().join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create the tree");
        std::fs::write(path, bytes).expect("write a file of the tree");
    }

    /// Clearsigned `.sjson` twins of the index and products file, signed by `key`.
    fn sign(&self, key: &SignedSecretKey, index: &Value, products: &Value) {
        self.write("streams/v1/index.sjson", &clearsign(key, index));
        self.write(
            &PRODUCTS_PATH.replace(".json", ".sjson"),
            &clearsign(key, products),
        );
    }

    fn serve(self) -> Nginx {
        Nginx::serving_dir(self.root, &NginxOptions::default())
    }
}

fn standard() -> (Images, Nginx) {
    let images = images();
    let nginx = Tree::new(&images, &images.products(), &index("image-downloads")).serve();
    (images, nginx)
}

fn mirror(nginx: &Nginx) -> String {
    nginx.url("/")
}

/// URIs nginx was asked for.
fn requested(nginx: &Nginx) -> Vec<String> {
    nginx
        .access_log()
        .iter()
        .filter_map(|line| line.split(' ').nth(2).map(str::to_owned))
        .collect()
}

fn was_requested(nginx: &Nginx, path: &str) -> bool {
    requested(nginx)
        .iter()
        .any(|uri| uri == &format!("/{path}"))
}

fn signing_key() -> SignedSecretKey {
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .can_encrypt(EncryptionCaps::None)
        .primary_user_id("Cloud Image Signing Key <cloud@example.org>".into());
    params
        .build()
        .expect("key params")
        .generate(rand::thread_rng())
        .expect("generate a key")
}

fn public_key(key: &SignedSecretKey) -> Vec<u8> {
    key.to_public_key()
        .to_bytes()
        .expect("serialise the public key")
}

fn clearsign(key: &SignedSecretKey, value: &Value) -> Vec<u8> {
    let text = serde_json::to_string_pretty(value).expect("json") + "\n";
    CleartextSignedMessage::sign(
        rand::thread_rng(),
        &text,
        &key.primary_key,
        &Password::empty(),
    )
    .expect("clearsign")
    .to_armored_bytes(ArmorOptions::default())
    .expect("armor")
}

#[test]
fn by_codename_the_newest_version_and_the_first_default_ftype_are_downloaded() {
    let (images, nginx) = standard();
    let dir = tempdir();
    let run = run(
        dir.path(),
        &[
            "image",
            "noble",
            "--arch",
            "amd64",
            "--mirror",
            &mirror(&nginx),
            "--json",
        ],
    );
    assert_exit(&run, 0, false);
    let expected = &images.noble_new_xz;
    let out = dir.path().join("ubuntu-24.04-server-cloudimg-amd64.img.xz");
    assert_eq!(
        std::fs::read(&out).expect("the image, named after its path"),
        expected.bytes,
        "{}",
        run.describe()
    );
    let summary = run.json_summary();
    assert_eq!(summary["verified"], true, "{summary}");
    assert_eq!(summary["sha256"], expected.sha256(), "{summary}");
    let image = &summary["image"];
    assert_eq!(
        image["product"], "com.ubuntu.cloud:server:24.04:amd64",
        "{summary}"
    );
    assert_eq!(image["version"], "20240501.1", "{summary}");
    assert_eq!(
        image["ftype"], "img.xz",
        "no uefi1.img: img.xz comes before disk1.img"
    );
    assert_eq!(image["arch"], "amd64", "{summary}");
    assert_eq!(summary["signed_by"], Value::Null, "{summary}");
    assert!(!was_requested(&nginx, NOBLE_OLD), "{:?}", requested(&nginx));
    assert!(
        !was_requested(&nginx, NOBLE_NEW_DISK),
        "{:?}",
        requested(&nginx)
    );
}

#[test]
fn a_version_or_an_alias_names_the_same_image_and_print_downloads_nothing() {
    let (images, nginx) = standard();
    let dir = tempdir();
    let want = format!(
        "{}  {}",
        images.noble_new_xz.sha256(),
        nginx.url(&format!("/{NOBLE_NEW_XZ}"))
    );
    for name in ["24.04", "lts", "noble"] {
        let run = run(
            dir.path(),
            &[
                "image",
                name,
                "--arch",
                "amd64",
                "--mirror",
                &mirror(&nginx),
                "--print",
            ],
        );
        assert_exit(&run, 0, false);
        assert_eq!(run.stdout.trim_end(), want, "{name}\n{}", run.describe());
    }
    assert!(
        !was_requested(&nginx, NOBLE_NEW_XZ),
        "{:?}",
        requested(&nginx)
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("list").count(),
        0,
        "--print writes no file"
    );
    // The other arch has its own product.
    let arm = run(
        dir.path(),
        &[
            "image",
            "lts",
            "--arch",
            "arm64",
            "--mirror",
            &mirror(&nginx),
            "--print",
        ],
    );
    assert_exit(&arm, 0, false);
    assert!(
        arm.stdout.starts_with(&images.noble_arm_disk.sha256()),
        "{}",
        arm.describe()
    );
}

#[test]
fn uefi1_img_comes_first_and_ftype_picks_another_item() {
    let (images, nginx) = standard();
    let dir = tempdir();
    let jammy = run(
        dir.path(),
        &[
            "image",
            "jammy",
            "--arch",
            "amd64",
            "--mirror",
            &mirror(&nginx),
            "--print",
        ],
    );
    assert_exit(&jammy, 0, false);
    assert!(
        jammy.stdout.starts_with(&images.jammy_uefi.sha256()),
        "{}",
        jammy.describe()
    );
    let run = run(
        dir.path(),
        &[
            "image",
            "noble",
            "--arch",
            "amd64",
            "--ftype",
            "disk1.img",
            "--mirror",
            &mirror(&nginx),
            "-o",
            "noble.img",
            "-c",
            "2",
        ],
    );
    assert_exit(&run, 0, false);
    assert_eq!(
        std::fs::read(dir.path().join("noble.img")).expect("the image"),
        images.noble_new_disk.bytes,
        "the newest version's disk1.img\n{}",
        run.describe()
    );
    assert!(
        run.stdout.starts_with(&images.noble_new_disk.sha256()),
        "{}",
        run.describe()
    );
}

#[test]
fn no_matching_release_names_the_releases_of_that_arch() {
    let (_images, nginx) = standard();
    let dir = tempdir();
    let run = run(
        dir.path(),
        &[
            "image",
            "focal",
            "--arch",
            "amd64",
            "--mirror",
            &mirror(&nginx),
        ],
    );
    assert_exit(&run, 2, true);
    assert!(
        run.stderr
            .contains("releases for amd64: jammy (22.04), noble (24.04)"),
        "{}",
        run.describe()
    );
    let arm = run_image(&nginx, &["jammy", "--arch", "arm64"]);
    assert_exit(&arm, 2, true);
    assert!(
        arm.stderr.contains("releases for arm64: noble (24.04)"),
        "{}",
        arm.describe()
    );
    assert!(
        requested(&nginx)
            .iter()
            .all(|uri| uri.starts_with("/streams/")),
        "{:?}",
        requested(&nginx)
    );
}

fn run_image(nginx: &Nginx, args: &[&str]) -> crate::support::Run {
    let dir = tempdir();
    let mirror = mirror(nginx);
    let mut line = vec!["image"];
    line.extend_from_slice(args);
    line.extend_from_slice(&["--mirror", &mirror]);
    run(dir.path(), &line)
}

#[test]
fn a_missing_ftype_names_the_ones_present() {
    let (_images, nginx) = standard();
    let run = run_image(&nginx, &["noble", "--arch", "amd64", "--ftype", "squashfs"]);
    assert_exit(&run, 2, true);
    assert!(
        run.stderr
            .contains("has no squashfs item; its file types: disk1.img, img.xz, manifest"),
        "{}",
        run.describe()
    );
}

#[test]
fn an_index_without_image_downloads_is_refused() {
    let images = images();
    let nginx = Tree::new(&images, &images.products(), &index("image-ids")).serve();
    let run = run_image(&nginx, &["noble", "--arch", "amd64"]);
    assert_exit(&run, 2, true);
    assert!(
        run.stderr
            .contains("lists no image-downloads products file"),
        "{}",
        run.describe()
    );
    assert!(
        !was_requested(&nginx, PRODUCTS_PATH),
        "{:?}",
        requested(&nginx)
    );
}

#[test]
fn a_wrong_sha256_in_the_products_file_is_an_integrity_failure() {
    let images = images();
    let mut products = images.products();
    products["products"]["com.ubuntu.cloud:server:24.04:amd64"]["versions"]["20240501.1"]["items"]
        ["img.xz"]["sha256"] = json!(WRONG_SHA256);
    let nginx = Tree::new(&images, &products, &index("image-downloads")).serve();
    let dir = tempdir();
    let run = run(
        dir.path(),
        &[
            "image",
            "noble",
            "--arch",
            "amd64",
            "--mirror",
            &mirror(&nginx),
        ],
    );
    assert_exit(&run, 3, true);
    assert!(run.stderr.contains(WRONG_SHA256), "{}", run.describe());
    assert!(
        !dir.path()
            .join("ubuntu-24.04-server-cloudimg-amd64.img.xz")
            .exists(),
        "nothing published under the final name"
    );
}

#[test]
fn a_size_other_than_the_catalogues_is_an_integrity_failure() {
    let images = images();
    let mut products = images.products();
    products["products"]["com.ubuntu.cloud:server:22.04:amd64"]["versions"]["20240301"]["items"]
        ["uefi1.img"]["size"] = json!(images.jammy_uefi.bytes.len() + 1);
    let nginx = Tree::new(&images, &products, &index("image-downloads")).serve();
    let run = run_image(&nginx, &["jammy", "--arch", "amd64"]);
    assert_exit(&run, 3, true);
    assert!(run.stderr.contains("size mismatch"), "{}", run.describe());
    assert!(
        run.stderr
            .contains(&format!("{} bytes", images.jammy_uefi.bytes.len() + 1)),
        "{}",
        run.describe()
    );
}

#[test]
fn with_a_keyring_the_signed_sjson_files_verify_and_the_image_is_downloaded() {
    let images = images();
    let key = signing_key();
    let (products, index) = (images.products(), index("image-downloads"));
    let tree = Tree::new(&images, &products, &index);
    tree.sign(&key, &index, &products);
    // The unsigned files are not read at all: make them lie.
    let mut lying = products.clone();
    lying["products"] = json!({});
    tree.write(PRODUCTS_PATH, lying.to_string().as_bytes());
    tree.write("keys.gpg", &public_key(&key));
    let keyring = tree.root.path().join("keys.gpg");
    let nginx = tree.serve();
    let dir = tempdir();
    let run = run(
        dir.path(),
        &[
            "image",
            "noble",
            "--arch",
            "amd64",
            "--mirror",
            &mirror(&nginx),
            "--keyring",
            keyring.to_str().expect("utf-8 path"),
            "--json",
        ],
    );
    assert_exit(&run, 0, false);
    let summary = run.json_summary();
    assert_eq!(
        summary["signed_by"].as_str(),
        Some(format!("{:X}", key.fingerprint()).as_str()),
        "{summary}"
    );
    assert_eq!(summary["image"]["version"], "20240501.1", "{summary}");
    assert_eq!(
        std::fs::read(dir.path().join("ubuntu-24.04-server-cloudimg-amd64.img.xz"))
            .expect("the image"),
        images.noble_new_xz.bytes
    );
    let uris = requested(&nginx);
    assert!(
        uris.iter().any(|uri| uri == "/streams/v1/index.sjson"),
        "{uris:?}"
    );
    assert!(
        !uris.iter().any(|uri| uri.ends_with(".json")),
        "no unsigned file is read with --keyring: {uris:?}"
    );
}

#[test]
fn a_tampered_sjson_or_a_wrong_keyring_fails_before_the_image_is_requested() {
    let images = images();
    let key = signing_key();
    let (products, index) = (images.products(), index("image-downloads"));
    let tree = Tree::new(&images, &products, &index);
    tree.sign(&key, &index, &products);
    // The mirror swapped the hash inside the signed products file after signing.
    let signed_products = PRODUCTS_PATH.replace(".json", ".sjson");
    let signed = std::fs::read_to_string(tree.root.path().join(&signed_products)).expect("read");
    let tampered = signed.replacen(&images.noble_new_xz.sha256(), WRONG_SHA256, 1);
    assert_ne!(signed, tampered, "the hash is in the signed text");
    tree.write(&signed_products, tampered.as_bytes());
    tree.write("keys.gpg", &public_key(&key));
    let stranger = signing_key();
    tree.write("stranger.gpg", &public_key(&stranger));
    let (keys, stranger_keys) = (
        tree.root.path().join("keys.gpg"),
        tree.root.path().join("stranger.gpg"),
    );
    let nginx = tree.serve();
    let tampered_run = run_image(
        &nginx,
        &[
            "noble",
            "--arch",
            "amd64",
            "--keyring",
            keys.to_str().expect("utf-8"),
        ],
    );
    assert_exit(&tampered_run, 3, true);
    assert!(
        tampered_run.stderr.contains("products file")
            && tampered_run.stderr.contains("is not trusted")
            && tampered_run.stderr.contains("bad signature"),
        "{}",
        tampered_run.describe()
    );
    let stranger_run = run_image(
        &nginx,
        &[
            "noble",
            "--arch",
            "amd64",
            "--keyring",
            stranger_keys.to_str().expect("utf-8"),
        ],
    );
    assert_exit(&stranger_run, 3, true);
    assert!(
        stranger_run.stderr.contains("index")
            && stranger_run.stderr.contains("unknown key")
            && stranger_run
                .stderr
                .contains(&format!("{:X}", key.fingerprint())),
        "{}",
        stranger_run.describe()
    );
    let uris = requested(&nginx);
    assert!(
        uris.iter()
            .all(|uri| uri.starts_with("/streams/v1/") && uri.ends_with(".sjson")),
        "only signed catalogue files were requested, never an image: {uris:?}"
    );
    assert!(!was_requested(&nginx, NOBLE_NEW_XZ), "{uris:?}");
}
