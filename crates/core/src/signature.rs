//! OpenPGP signatures of checksum files (feature `openpgp`, through rPGP):
//! a [`Keyring`] of trusted keys, and the check of a detached signature
//! ([`verify_detached`]) or a clearsigned file ([`verify_cleartext`]).
//!
//! rPGP verifies the cryptography; the policy is ours and is one paragraph:
//! a signature counts only if it was made with SHA-256 or stronger (SHA-384,
//! SHA-512, SHA3-256, SHA3-512), by a key of the keyring — the primary key
//! or a subkey — that was capable of signing (its newest self-signature or
//! binding signature at the time carries the signing flag, or, on an old
//! key, no flags at all), was neither expired nor revoked at the
//! signature's creation time (a revocation for compromise, or for no
//! stated reason, counts whenever it was made), and the signature itself
//! has not expired. A clearsigned file passes when one of its signatures
//! does; one by a keyring key that does not verify fails it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{RevocationCode, Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Tag, Timestamp};

/// Trusted OpenPGP keys, from a keyring or key file.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

/// Who made a signature that passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    /// Fingerprint of the key's primary key, uppercase hex: what publishers
    /// print and users pin.
    pub fingerprint: String,
    /// Fingerprint of the key or subkey that made the signature.
    pub signing_key: String,
    /// The key's first user ID, if it has one.
    pub user_id: Option<String>,
    /// When the signature was made.
    pub created: SystemTime,
}

/// Why a signature is not good enough.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The keyring holds no usable key.
    #[error("no usable OpenPGP key in the keyring ({0})")]
    Keyring(String),
    /// The signature (or clearsigned file) cannot be parsed.
    #[error("not an OpenPGP signature ({0})")]
    Malformed(String),
    /// The file carries no signature.
    #[error("no signature")]
    NoSignature,
    /// No key of the keyring made the signature.
    #[error("signed by unknown key {issuer}, which is not in the keyring")]
    UnknownKey {
        /// The issuer's fingerprint or key ID, hex.
        issuer: String,
    },
    /// The signature does not match the data: tampered, or signed data
    /// other than this.
    #[error("bad signature by key {fingerprint}: the file was changed or is not what was signed")]
    BadSignature {
        /// The key that supposedly signed.
        fingerprint: String,
    },
    /// The key had expired when the signature was made.
    #[error("key {fingerprint} had expired when the signature was made")]
    ExpiredKey {
        /// The key.
        fingerprint: String,
    },
    /// The key was revoked.
    #[error("key {fingerprint} is revoked")]
    RevokedKey {
        /// The key.
        fingerprint: String,
    },
    /// The key or subkey is not allowed to sign.
    #[error("key {fingerprint} is not a signing key")]
    NotSigningKey {
        /// The key.
        fingerprint: String,
    },
    /// The signature's own expiry time has passed.
    #[error("the signature expired")]
    ExpiredSignature,
    /// The signature uses a hash weaker than SHA-256.
    #[error("weak hash algorithm {algorithm}: SHA-256 or stronger is required")]
    WeakHash {
        /// The algorithm's name.
        algorithm: String,
    },
}

impl Keyring {
    /// Reads a keyring: one or more transferable public keys, binary (as
    /// Debian's `.gpg` keyrings are: keys one after another) or
    /// ASCII-armored. Keys rPGP cannot parse are skipped; none at all is an
    /// error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, SignatureError> {
        let (parsed, _headers) = SignedPublicKey::from_reader_many(bytes)
            .map_err(|e| SignatureError::Keyring(e.to_string()))?;
        let mut keys = Vec::new();
        let mut last_error = None;
        for key in parsed {
            match key {
                Ok(key) => keys.push(key),
                Err(error) => last_error = Some(error.to_string()),
            }
        }
        if keys.is_empty() {
            return Err(SignatureError::Keyring(
                last_error.unwrap_or_else(|| "it is empty".to_owned()),
            ));
        }
        Ok(Keyring { keys })
    }

    /// Primary-key fingerprints (uppercase hex) of the keys it holds.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|key| hex(&key.fingerprint()))
            .collect()
    }
}

/// Whether `bytes` is a clearsigned message (`-----BEGIN PGP SIGNED MESSAGE-----`).
pub fn is_cleartext(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes[start..].starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----")
}

/// Checks a detached signature (binary or armored; several signatures in
/// one file count like a clearsigned file's) of `data` at time `now`.
pub fn verify_detached(
    keyring: &Keyring,
    data: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> Result<Signer, SignatureError> {
    let (parsed, _headers) = DetachedSignature::from_reader_many(signature)
        .map_err(|e| SignatureError::Malformed(e.to_string()))?;
    let mut signatures = Vec::new();
    for parsed in parsed {
        let parsed = parsed.map_err(|e| SignatureError::Malformed(e.to_string()))?;
        signatures.push(parsed.signature);
    }
    first_good(keyring, &signatures, data, now)
}

/// Checks a clearsigned file at time `now`; gives the signed text (with
/// CRLF line ends, dash-escaping undone) and who signed it. Nothing
/// outside the signed part is returned.
pub fn verify_cleartext(
    keyring: &Keyring,
    message: &[u8],
    now: SystemTime,
) -> Result<(String, Signer), SignatureError> {
    let text = std::str::from_utf8(message)
        .map_err(|_| SignatureError::Malformed("a clearsigned file must be UTF-8".to_owned()))?;
    let (message, _headers) = CleartextSignedMessage::from_string(text)
        .map_err(|e| SignatureError::Malformed(e.to_string()))?;
    let signed = message.signed_text();
    let signer = first_good(keyring, message.signatures(), signed.as_bytes(), now)?;
    Ok((signed, signer))
}

/// The signer of the first signature that passes; a bad one by a keyring
/// key fails the lot, otherwise the first signature's reason is given.
fn first_good(
    keyring: &Keyring,
    signatures: &[Signature],
    data: &[u8],
    now: SystemTime,
) -> Result<Signer, SignatureError> {
    let mut first_failure = None;
    for signature in signatures {
        match check_one(keyring, signature, data, now) {
            Ok(signer) => return Ok(signer),
            Err(bad @ SignatureError::BadSignature { .. }) => return Err(bad),
            Err(other) => {
                first_failure.get_or_insert(other);
            }
        }
    }
    Err(first_failure.unwrap_or(SignatureError::NoSignature))
}

/// Signatures over data: which key made them, whether they verify, and
/// whether that key could sign at the time.
fn check_one(
    keyring: &Keyring,
    signature: &Signature,
    data: &[u8],
    now: SystemTime,
) -> Result<Signer, SignatureError> {
    if !matches!(
        signature.typ(),
        Some(SignatureType::Binary | SignatureType::Text)
    ) {
        return Err(SignatureError::Malformed(format!(
            "a {:?} signature is not a signature over data",
            signature.typ()
        )));
    }
    let hash = signature.hash_alg().unwrap_or(HashAlgorithm::None);
    if !matches!(
        hash,
        HashAlgorithm::Sha256
            | HashAlgorithm::Sha384
            | HashAlgorithm::Sha512
            | HashAlgorithm::Sha3_256
            | HashAlgorithm::Sha3_512
    ) {
        return Err(SignatureError::WeakHash {
            algorithm: format!("{hash:?}"),
        });
    }
    let created = signature
        .created()
        .ok_or_else(|| SignatureError::Malformed("no creation time".to_owned()))?;
    if let Some(lifetime) = signature.signature_expiration_time()
        && lifetime.as_secs() != 0
        && time_of(created) + Duration::from(lifetime) < now
    {
        return Err(SignatureError::ExpiredSignature);
    }
    let (key, component) = find_signer(keyring, signature)?;
    let primary = &key.primary_key;
    let fingerprint = hex(&key.fingerprint());
    let verified = match component {
        Component::Primary => signature.verify(primary, data),
        Component::Subkey(idx) => signature.verify(&key.public_subkeys[idx].key, data),
    };
    if verified.is_err() {
        return Err(SignatureError::BadSignature { fingerprint });
    }
    // The primary key must be valid whichever component signed.
    if revoked_at(&key.details.revocation_signatures, created, |revocation| {
        revocation.typ() == Some(SignatureType::KeyRevocation)
            && revocation.verify_key(primary).is_ok()
    }) {
        return Err(SignatureError::RevokedKey { fingerprint });
    }
    let self_signatures = newest_self_signatures(key, created);
    let primary_expired = self_signatures
        .iter()
        .filter_map(|sig| sig.key_expiration_time())
        .any(|lifetime| expired(primary.created_at(), lifetime.into(), created));
    if primary_expired {
        return Err(SignatureError::ExpiredKey { fingerprint });
    }
    let signing_key = match component {
        Component::Primary => {
            let flags = self_signatures
                .iter()
                .filter(|sig| has_key_flags(sig))
                .max_by_key(|sig| sig.created());
            if flags.is_some_and(|sig| !sig.key_flags().sign()) {
                return Err(SignatureError::NotSigningKey { fingerprint });
            }
            fingerprint.clone()
        }
        Component::Subkey(idx) => {
            let subkey = &key.public_subkeys[idx];
            let subkey_fingerprint = hex(&subkey.key.fingerprint());
            let verifies =
                |sig: &Signature| sig.verify_subkey_binding(primary, &subkey.key).is_ok();
            if revoked_at(&subkey.signatures, created, |sig| {
                sig.typ() == Some(SignatureType::SubkeyRevocation) && verifies(sig)
            }) {
                return Err(SignatureError::RevokedKey {
                    fingerprint: subkey_fingerprint,
                });
            }
            let binding = subkey
                .signatures
                .iter()
                .filter(|sig| sig.typ() == Some(SignatureType::SubkeyBinding))
                .filter(|sig| sig.created().is_some_and(|at| at <= created))
                .filter(|sig| verifies(sig))
                .max_by_key(|sig| sig.created());
            let Some(binding) = binding else {
                return Err(SignatureError::NotSigningKey {
                    fingerprint: subkey_fingerprint,
                });
            };
            // A signing subkey must sign back (RFC 9580 5.2.1): without the
            // embedded binding, anyone could claim someone else's subkey.
            let backsigned = binding.embedded_signature().is_some_and(|back| {
                back.verify_primary_key_binding(&subkey.key, primary)
                    .is_ok()
            });
            if !binding.key_flags().sign() || !backsigned {
                return Err(SignatureError::NotSigningKey {
                    fingerprint: subkey_fingerprint,
                });
            }
            if binding
                .key_expiration_time()
                .is_some_and(|lifetime| expired(subkey.key.created_at(), lifetime.into(), created))
            {
                return Err(SignatureError::ExpiredKey {
                    fingerprint: subkey_fingerprint,
                });
            }
            subkey_fingerprint
        }
    };
    Ok(Signer {
        fingerprint,
        signing_key,
        user_id: key
            .details
            .users
            .first()
            .map(|user| String::from_utf8_lossy(user.id.id()).into_owned()),
        created: time_of(created),
    })
}

/// Which part of a key made a signature.
enum Component {
    Primary,
    Subkey(usize),
}

/// The key and component named by the signature's issuer fingerprint or
/// key ID.
fn find_signer<'k>(
    keyring: &'k Keyring,
    signature: &Signature,
) -> Result<(&'k SignedPublicKey, Component), SignatureError> {
    let fingerprints = signature.issuer_fingerprint();
    let key_ids = signature.issuer_key_id();
    let names = |details: &dyn Fn() -> (pgp::types::Fingerprint, pgp::types::KeyId)| {
        let (fingerprint, key_id) = details();
        fingerprints.iter().any(|fp| **fp == fingerprint) || key_ids.iter().any(|id| **id == key_id)
    };
    for key in &keyring.keys {
        if names(&|| (key.fingerprint(), key.legacy_key_id())) {
            return Ok((key, Component::Primary));
        }
        for (idx, subkey) in key.public_subkeys.iter().enumerate() {
            if names(&|| (subkey.key.fingerprint(), subkey.key.legacy_key_id())) {
                return Ok((key, Component::Subkey(idx)));
            }
        }
    }
    let issuer = match (fingerprints.first(), key_ids.first()) {
        (Some(fingerprint), _) => hex(fingerprint),
        (None, Some(key_id)) => key_id
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02X}"))
            .collect(),
        (None, None) => "(no issuer named)".to_owned(),
    };
    Err(SignatureError::UnknownKey { issuer })
}

/// The newest self-signatures of the primary key made at or before `at`:
/// the direct-key signature and the certification of a user ID, each of
/// which may set the key's expiry and flags.
fn newest_self_signatures(key: &SignedPublicKey, at: Timestamp) -> Vec<&Signature> {
    let primary = &key.primary_key;
    let direct = key
        .details
        .direct_signatures
        .iter()
        .filter(|sig| sig.verify_key(primary).is_ok());
    let certifications = key.details.users.iter().flat_map(|user| {
        user.signatures.iter().filter(move |sig| {
            sig.is_certification()
                && sig
                    .verify_certification(primary, Tag::UserId, &user.id)
                    .is_ok()
        })
    });
    let made_by = |sig: &&Signature| sig.created().is_some_and(|created| created <= at);
    let newest_direct = direct.filter(made_by).max_by_key(|sig| sig.created());
    let newest_certification = certifications
        .filter(made_by)
        .max_by_key(|sig| sig.created());
    newest_direct
        .into_iter()
        .chain(newest_certification)
        .collect()
}

/// Whether one of `signatures` that `applies` revokes a key for a signature
/// made at `at`: a soft revocation (superseded, retired) only from its own
/// time on, any other at all times.
fn revoked_at(
    signatures: &[Signature],
    at: Timestamp,
    applies: impl Fn(&Signature) -> bool,
) -> bool {
    signatures.iter().filter(|sig| applies(sig)).any(|sig| {
        let soft = matches!(
            sig.revocation_reason_code(),
            Some(RevocationCode::KeySuperseded | RevocationCode::KeyRetired)
        );
        !soft || sig.created().is_some_and(|revoked| revoked <= at)
    })
}

/// Whether a key made at `created` with this lifetime (zero: none) had
/// expired at `at`.
fn expired(created: Timestamp, lifetime: Duration, at: Timestamp) -> bool {
    !lifetime.is_zero() && time_of(created) + lifetime <= time_of(at)
}

/// Whether a signature states key flags at all: an old key's self-signature
/// without them leaves the key usable for what its algorithm can do.
fn has_key_flags(signature: &Signature) -> bool {
    signature.config().is_some_and(|config| {
        config
            .hashed_subpackets()
            .any(|packet| matches!(packet.data, SubpacketData::KeyFlags(_)))
    })
}

fn time_of(timestamp: Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::from(timestamp.as_secs()))
}

fn hex(fingerprint: &pgp::types::Fingerprint) -> String {
    format!("{fingerprint:X}")
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint)?;
        if let Some(user_id) = &self.user_id {
            write!(f, " ({user_id})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use pgp::composed::{
        ArmorOptions, EncryptionCaps, KeyType, SecretKeyParamsBuilder, SignedSecretKey,
        SubkeyParamsBuilder,
    };
    use pgp::packet::{SignatureConfig, Subpacket};
    use pgp::ser::Serialize as _;
    use pgp::types::Password;

    use super::*;

    const SUMS: &[u8] =
        b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  disk.img\n";
    const DAY: u32 = 86_400;

    /// A v4 key of `key_type` made `age_days` ago; with `subkey`, signing
    /// is left to a subkey of the same type (the primary only certifies).
    fn keygen(key_type: KeyType, age_days: u32, subkey: bool) -> SignedSecretKey {
        let created = Timestamp::from_secs(Timestamp::now().as_secs() - age_days * DAY);
        let mut params = SecretKeyParamsBuilder::default();
        params
            .key_type(key_type.clone())
            .can_certify(true)
            .can_sign(!subkey)
            .can_encrypt(EncryptionCaps::None)
            .created_at(created)
            .primary_user_id("Test Signer <signer@example.org>".into());
        if subkey {
            let mut signing = SubkeyParamsBuilder::default();
            signing
                .key_type(key_type)
                .can_sign(true)
                .can_encrypt(EncryptionCaps::None)
                .created_at(created);
            params.subkeys(vec![signing.build().expect("subkey params")]);
        }
        params
            .build()
            .expect("key params")
            .generate(rand::thread_rng())
            .expect("generate key")
    }

    fn ed25519() -> SignedSecretKey {
        keygen(KeyType::Ed25519Legacy, 0, false)
    }

    fn keyring_of(keys: &[SignedPublicKey]) -> Keyring {
        let mut bytes = Vec::new();
        for key in keys {
            key.to_writer(&mut bytes).expect("serialise key");
        }
        Keyring::from_bytes(&bytes).expect("keyring")
    }

    fn sign_with(key: &impl pgp::types::SigningKey, data: &[u8], hash: HashAlgorithm) -> Vec<u8> {
        let signature = DetachedSignature::sign_binary_data(
            rand::thread_rng(),
            key,
            &Password::empty(),
            hash,
            data,
        )
        .expect("sign");
        let mut bytes = Vec::new();
        signature
            .to_writer(&mut bytes)
            .expect("serialise signature");
        bytes
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn fingerprint_of(key: &SignedSecretKey) -> String {
        hex(&key.fingerprint())
    }

    /// A self-signature of `key`'s primary made `age_days` ago, with the
    /// hashed subpackets given and the usual issuer ones.
    fn self_signature(
        key: &SignedSecretKey,
        typ: SignatureType,
        age_days: u32,
        extra: Vec<SubpacketData>,
    ) -> Signature {
        let made = Timestamp::from_secs(Timestamp::now().as_secs() - age_days * DAY);
        let mut config = SignatureConfig::v4(typ, key.algorithm(), HashAlgorithm::Sha256);
        config.hashed_subpackets = [
            SubpacketData::SignatureCreationTime(made),
            SubpacketData::IssuerFingerprint(key.fingerprint()),
        ]
        .into_iter()
        .chain(extra)
        .map(|data| Subpacket::regular(data).expect("subpacket"))
        .collect();
        let public = key.to_public_key();
        config
            .sign_key(&key.primary_key, &Password::empty(), &public.primary_key)
            .expect("self-signature")
    }

    #[test]
    fn good_detached_signatures_by_rsa_and_ed25519_keys_name_their_key() {
        for key in [keygen(KeyType::Rsa(2048), 0, false), ed25519()] {
            let keyring = keyring_of(&[key.to_public_key()]);
            let binary = sign_with(&key.primary_key, SUMS, HashAlgorithm::Sha256);
            let signer = verify_detached(&keyring, SUMS, &binary, now()).expect("good signature");
            assert_eq!(signer.fingerprint, fingerprint_of(&key));
            assert_eq!(signer.signing_key, signer.fingerprint);
            assert_eq!(
                signer.user_id.as_deref(),
                Some("Test Signer <signer@example.org>")
            );
            let armored = DetachedSignature::from_bytes(&binary[..])
                .expect("parse")
                .to_armored_bytes(ArmorOptions::default())
                .expect("armor");
            assert_eq!(verify_detached(&keyring, SUMS, &armored, now()), Ok(signer));
        }
    }

    #[test]
    fn a_signing_subkey_signs_for_its_primary() {
        let key = keygen(KeyType::Ed25519Legacy, 0, true);
        let keyring = keyring_of(&[key.to_public_key()]);
        let signature = sign_with(&key.secret_subkeys[0].key, SUMS, HashAlgorithm::Sha512);
        let signer = verify_detached(&keyring, SUMS, &signature, now()).expect("good signature");
        assert_eq!(signer.fingerprint, fingerprint_of(&key));
        assert_eq!(
            signer.signing_key,
            hex(&key.secret_subkeys[0].key.fingerprint())
        );
        let certify_only = sign_with(&key.primary_key, SUMS, HashAlgorithm::Sha256);
        assert_eq!(
            verify_detached(&keyring, SUMS, &certify_only, now()),
            Err(SignatureError::NotSigningKey {
                fingerprint: fingerprint_of(&key)
            }),
            "the primary has no signing flag"
        );
    }

    #[test]
    fn tampered_data_is_a_bad_signature() {
        let key = keygen(KeyType::Rsa(2048), 0, false);
        let keyring = keyring_of(&[key.to_public_key()]);
        let signature = sign_with(&key.primary_key, SUMS, HashAlgorithm::Sha256);
        let mut tampered = SUMS.to_vec();
        tampered[0] = b'f';
        assert_eq!(
            verify_detached(&keyring, &tampered, &signature, now()),
            Err(SignatureError::BadSignature {
                fingerprint: fingerprint_of(&key)
            })
        );
    }

    #[test]
    fn a_key_outside_the_keyring_is_unknown() {
        let (trusted, stranger) = (ed25519(), ed25519());
        let keyring = keyring_of(&[trusted.to_public_key()]);
        let signature = sign_with(&stranger.primary_key, SUMS, HashAlgorithm::Sha256);
        let error = verify_detached(&keyring, SUMS, &signature, now()).expect_err("unknown");
        assert_eq!(
            error,
            SignatureError::UnknownKey {
                issuer: fingerprint_of(&stranger)
            }
        );
        assert!(error.to_string().contains("unknown key"), "{error}");
    }

    #[test]
    fn sha1_is_a_weak_hash() {
        let key = keygen(KeyType::Rsa(2048), 0, false);
        let keyring = keyring_of(&[key.to_public_key()]);
        let signature = sign_with(&key.primary_key, SUMS, HashAlgorithm::Sha1);
        assert!(matches!(
            verify_detached(&keyring, SUMS, &signature, now()),
            Err(SignatureError::WeakHash { .. })
        ));
    }

    #[test]
    fn a_key_expired_before_the_signature_fails_and_one_valid_then_passes() {
        let key = keygen(KeyType::Ed25519Legacy, 10, false);
        let mut public = key.to_public_key();
        // Made 9 days ago, the key expires 1 day after its creation: long gone.
        public.details.direct_signatures.push(self_signature(
            &key,
            SignatureType::Key,
            9,
            vec![SubpacketData::KeyExpirationTime(
                pgp::types::Duration::from_secs(DAY),
            )],
        ));
        let keyring = keyring_of(&[public]);
        let signature = sign_with(&key.primary_key, SUMS, HashAlgorithm::Sha256);
        assert_eq!(
            verify_detached(&keyring, SUMS, &signature, now()),
            Err(SignatureError::ExpiredKey {
                fingerprint: fingerprint_of(&key)
            })
        );
        // The same key with 30 days of life signs validly today.
        let mut public = key.to_public_key();
        public.details.direct_signatures.push(self_signature(
            &key,
            SignatureType::Key,
            9,
            vec![SubpacketData::KeyExpirationTime(
                pgp::types::Duration::from_secs(30 * DAY),
            )],
        ));
        let keyring = keyring_of(&[public]);
        assert!(verify_detached(&keyring, SUMS, &signature, now()).is_ok());
    }

    #[test]
    fn a_compromised_key_is_revoked_for_every_signature_a_retired_one_after_it() {
        let key = keygen(KeyType::Ed25519Legacy, 10, false);
        let signature = sign_with(&key.primary_key, SUMS, HashAlgorithm::Sha256);
        let revoked = |code: RevocationCode, age_days: u32| {
            let mut public = key.to_public_key();
            public.details.revocation_signatures.push(self_signature(
                &key,
                SignatureType::KeyRevocation,
                age_days,
                vec![SubpacketData::RevocationReason(code, "test".into())],
            ));
            keyring_of(&[public])
        };
        let expected = Err(SignatureError::RevokedKey {
            fingerprint: fingerprint_of(&key),
        });
        assert_eq!(
            verify_detached(
                &revoked(RevocationCode::KeyCompromised, 0),
                SUMS,
                &signature,
                now()
            ),
            expected
        );
        assert_eq!(
            verify_detached(
                &revoked(RevocationCode::KeyRetired, 1),
                SUMS,
                &signature,
                now()
            ),
            expected,
            "retired a day before it signed"
        );
    }

    #[test]
    fn a_clearsigned_file_gives_only_its_signed_text() {
        let key = keygen(KeyType::Rsa(2048), 0, false);
        let keyring = keyring_of(&[key.to_public_key()]);
        let text = std::str::from_utf8(SUMS).expect("text");
        let message = CleartextSignedMessage::sign(
            rand::thread_rng(),
            text,
            &key.primary_key,
            &Password::empty(),
        )
        .expect("clearsign")
        .to_armored_bytes(ArmorOptions::default())
        .expect("armor");
        assert!(is_cleartext(&message));
        assert!(!is_cleartext(SUMS));
        let (signed, signer) = verify_cleartext(&keyring, &message, now()).expect("good");
        assert_eq!(signed.replace("\r\n", "\n"), text);
        assert_eq!(signer.fingerprint, fingerprint_of(&key));
        let tampered = String::from_utf8(message)
            .expect("armor is text")
            .replacen("e3b0", "f3b0", 1);
        assert_eq!(
            verify_cleartext(&keyring, tampered.as_bytes(), now()),
            Err(SignatureError::BadSignature {
                fingerprint: fingerprint_of(&key)
            })
        );
    }

    #[test]
    fn garbage_is_malformed_and_an_empty_keyring_is_refused() {
        let keyring = keyring_of(&[ed25519().to_public_key()]);
        assert!(matches!(
            verify_detached(&keyring, SUMS, b"not a signature", now()),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            Keyring::from_bytes(b""),
            Err(SignatureError::Keyring(_))
        ));
    }

    /// Debian's own clearsigned `InRelease` (bookworm, signed by the bookworm
    /// and trixie archive keys, RSA, and the bookworm release key, EdDSA),
    /// copied byte for byte with the `debian-archive-keyring.gpg` of the
    /// same machine (a binary keyring: keys one after another).
    #[test]
    fn debians_inrelease_verifies_against_debians_binary_keyring() {
        let keyring =
            Keyring::from_bytes(include_bytes!("../tests/data/debian-archive-keyring.gpg"))
                .expect("Debian's keyring");
        assert!(
            keyring.fingerprints().len() >= 3,
            "{:?}",
            keyring.fingerprints()
        );
        let inrelease: &[u8] = include_bytes!("../tests/data/debian-bookworm-InRelease");
        let (text, signer) =
            verify_cleartext(&keyring, inrelease, now()).expect("a good signature");
        assert!(text.starts_with("Origin: Debian\r\n"), "{}", &text[..40]);
        assert!(
            [
                "4CB50190207B4758A3F73A796ED0E7B82643E131",
                "B8E5F13176D2A7A75220028078DBA3BC47EF2265",
                "4D64FEC119C2029067D6E791F8D2585B8783D481",
            ]
            .iter()
            .any(|fpr| signer.fingerprint == *fpr || signer.signing_key == *fpr),
            "{signer:?}"
        );
        // Every signature of the file passes alone: RSA and EdDSA both work.
        let (message, _) = CleartextSignedMessage::from_string(
            std::str::from_utf8(inrelease).expect("InRelease is text"),
        )
        .expect("parse");
        assert_eq!(message.signatures().len(), 3);
        let algorithms: Vec<_> = message
            .signatures()
            .iter()
            .map(|signature| {
                check_one(&keyring, signature, message.signed_text().as_bytes(), now())
                    .expect("each signature passes");
                signature.config().map(|config| config.pub_alg)
            })
            .collect();
        assert!(
            algorithms.contains(&Some(
                pgp::crypto::public_key::PublicKeyAlgorithm::EdDSALegacy
            )),
            "{algorithms:?}"
        );
        let mut tampered = inrelease.to_vec();
        let at = tampered
            .windows(6)
            .position(|w| w == b"Debian")
            .expect("a word to change");
        tampered[at] = b'X';
        assert!(matches!(
            verify_cleartext(&keyring, &tampered, now()),
            Err(SignatureError::BadSignature { .. })
        ));
    }
}
