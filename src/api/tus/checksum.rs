//! The checksum extension: a `PATCH` with `Upload-Checksum: ALGORITHM
//! BASE64DIGEST` is kept only if its body, whole, has that digest.

use base64::Engine as _;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use warp::http::HeaderMap;

use super::ApiError;

/// The algorithms offered, for `Tus-Checksum-Algorithm`.
pub const ALGORITHMS: &str = "md5,sha1,sha256";

/// The digest a `PATCH` body must have, and the running hash of what came.
pub struct Expected {
    digest: Vec<u8>,
    hash: Hash,
}

enum Hash {
    Md5(Md5),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Expected {
    /// The request's `Upload-Checksum`, if any: an algorithm not offered is
    /// a 400 naming them, a digest that is not base64 a 400 on the header.
    pub fn of(headers: &HeaderMap) -> Result<Option<Expected>, ApiError> {
        let Some(value) = headers.get("upload-checksum") else {
            return Ok(None);
        };
        let bad = || ApiError::BadHeader("Upload-Checksum");
        let value = value.to_str().map_err(|_| bad())?;
        let (algorithm, encoded) = value.trim().split_once(' ').ok_or_else(bad)?;
        let hash = match algorithm {
            "md5" => Hash::Md5(Md5::new()),
            "sha1" => Hash::Sha1(Sha1::new()),
            "sha256" => Hash::Sha256(Sha256::new()),
            _ => return Err(ApiError::ChecksumAlgorithm),
        };
        let digest = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad())?;
        Ok(Some(Expected { digest, hash }))
    }

    /// More of the body.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.hash {
            Hash::Md5(h) => h.update(bytes),
            Hash::Sha1(h) => h.update(bytes),
            Hash::Sha256(h) => h.update(bytes),
        }
    }

    /// Whether the whole body had the digest.
    pub fn matches(self) -> bool {
        let got = match self.hash {
            Hash::Md5(h) => h.finalize().to_vec(),
            Hash::Sha1(h) => h.finalize().to_vec(),
            Hash::Sha256(h) => h.finalize().to_vec(),
        };
        got == self.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn expected(value: &str) -> Result<Option<Expected>, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert("upload-checksum", HeaderValue::from_str(value).unwrap());
        Expected::of(&headers)
    }

    #[test]
    fn each_algorithm_checks_the_whole_body() {
        // The digests of "hello world", from coreutils' md5sum, sha1sum and sha256sum.
        for (algorithm, hex_digest) in [
            ("md5", "5eb63bbbe01eeed093cb22bb8f5acdc3"),
            ("sha1", "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"),
            (
                "sha256",
                "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
            ),
        ] {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_digest).unwrap());
            let header = format!("{algorithm} {encoded}");
            let mut whole = expected(&header).unwrap().unwrap();
            whole.update(b"hello ");
            whole.update(b"world");
            assert!(whole.matches(), "{algorithm}");
            let mut short = expected(&header).unwrap().unwrap();
            short.update(b"hello");
            assert!(!short.matches(), "{algorithm}");
        }
    }

    #[test]
    fn an_algorithm_not_offered_or_a_bad_digest_is_refused() {
        assert!(matches!(
            expected("crc32 AAAA"),
            Err(ApiError::ChecksumAlgorithm)
        ));
        assert!(matches!(
            expected("sha1 !!!"),
            Err(ApiError::BadHeader("Upload-Checksum"))
        ));
        assert!(matches!(
            expected("sha1"),
            Err(ApiError::BadHeader("Upload-Checksum"))
        ));
        assert!(Expected::of(&HeaderMap::new()).unwrap().is_none());
    }
}
