//! The concatenation extension: partial uploads (`Upload-Concat: partial`),
//! each written like any other but never handed over, joined in the order
//! given by a final one (`Upload-Concat: final;URL URL ...`), which is
//! created complete and handed over. tus-js-client's `parallelUploads`
//! sends its parts this way.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;
use warp::http::HeaderMap;

use super::{location, upload_id, ApiError, AppState, PATH};
use crate::layout::{fsync_dir, remove_if_exists};
use crate::store::tus::{Concat, TusUpload};

/// The request's `Upload-Concat`: none (an upload of its own), `partial`, or
/// `final;` and the partial uploads' URLs (absolute, or paths), in order.
pub fn of(headers: &HeaderMap) -> Result<Concat, ApiError> {
    let Some(value) = headers.get("upload-concat") else {
        return Ok(Concat::Single);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::BadHeader("Upload-Concat"))?
        .trim();
    if value == "partial" {
        return Ok(Concat::Partial);
    }
    let Some(urls) = value.strip_prefix("final;") else {
        return Err(ApiError::BadHeader("Upload-Concat"));
    };
    let mut parts = Vec::new();
    for url in urls.split_whitespace() {
        let id = part_id(url).ok_or_else(|| {
            ApiError::TusConcat(format!("{url} is not the URL of a tus upload here."))
        })?;
        if parts.contains(&id) {
            return Err(ApiError::TusConcat(format!("{url} is named twice.")));
        }
        parts.push(id);
    }
    if parts.is_empty() {
        return Err(ApiError::TusConcat(
            "A final upload names its partial uploads.".into(),
        ));
    }
    Ok(Concat::Final(parts))
}

/// The id in a partial upload's URL: `[scheme://host]/api/client/v1/tus/{id}`.
fn part_id(url: &str) -> Option<Uuid> {
    let path = match url.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/')?..],
        None => url,
    };
    let id = path.strip_prefix(PATH)?.strip_prefix('/')?;
    upload_id(id)
}

/// The value of `Upload-Concat` for `HEAD` on an upload.
pub fn header_value(concat: &Concat) -> Option<String> {
    match concat {
        Concat::Single => None,
        Concat::Partial => Some("partial".into()),
        Concat::Final(parts) => {
            let urls: Vec<String> = parts.iter().map(|&id| location(id)).collect();
            Some(format!("final;{}", urls.join(" ")))
        }
    }
}

/// Joins the partial uploads `parts` of `joined`'s tenant, all complete,
/// into `joined`'s file, then in one transaction writes `joined` (complete,
/// `length` their sum) and removes them; their files go last. A crash
/// before that transaction leaves only a file of no upload, which the start
/// removes. None may be being written.
pub async fn join(
    mut joined: TusUpload,
    parts: &[Uuid],
    state: &AppState,
) -> Result<TusUpload, ApiError> {
    let refused = |id: Uuid, why: &str| ApiError::TusConcat(format!("{}: {why}", location(id)));
    let of_tenant = |id: Uuid| -> Result<TusUpload, ApiError> {
        state
            .services
            .store
            .tus_get(id)?
            .filter(|part| part.tenant == joined.tenant)
            .ok_or_else(|| refused(id, "no such upload of this key."))
    };
    // Each part is known before its writer is asked for, and read again
    // once all are held (another final upload may have joined it meanwhile).
    for &id in parts {
        of_tenant(id)?;
    }
    let mut held = Vec::with_capacity(parts.len());
    for &id in parts {
        let writer = state.tus_writers.try_hold(id);
        held.push(writer.ok_or_else(|| refused(id, "being written now."))?);
    }
    let mut sources = Vec::with_capacity(parts.len());
    for &id in parts {
        let part = of_tenant(id)?;
        if part.concat != Concat::Partial {
            return Err(refused(
                id,
                "not a partial upload (Upload-Concat: partial).",
            ));
        }
        if !part.is_complete() {
            return Err(refused(id, "not complete yet; finish it first."));
        }
        sources.push((state.services.layout.tus_path(id), part.offset));
    }
    let total: u64 = sources.iter().map(|(_, len)| len).sum();
    let limit = state.services.config.max_upload_bytes;
    if total > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    if total == 0 {
        return Err(ApiError::invalid(
            "Upload-Concat",
            "The video must not be empty.",
        ));
    }
    joined.length = Some(total);
    joined.offset = total;
    let layout = state.services.layout.clone();
    let store = state.services.store.clone();
    let (row, ids) = (joined.clone(), parts.to_vec());
    state
        .services
        .blocking(move || -> Result<(), ApiError> {
            let file = layout.tus_path(row.id);
            let copied = copy_parts(&sources, &file).and_then(|()| {
                fsync_dir(&layout.tus_dir())?;
                Ok(store.tus_join(&row, &ids)?)
            });
            if let Err(e) = copied {
                // Not joined: the copy goes at once, not at the next start
                // (it may be what filled the disk).
                let _ = remove_if_exists(&file);
                return Err(e);
            }
            for (path, _) in &sources {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(error = %e, path = %path.display(), "a joined partial upload's file stays");
                }
            }
            Ok(())
        })
        .await??;
    drop(held);
    for &id in parts {
        state.tus_writers.forget(id);
    }
    tracing::info!(upload = %joined.id, parts = parts.len(), length = total, "tus partial uploads joined");
    Ok(joined)
}

/// Writes the first `len` bytes of each part's file, in order, into a new
/// file at `to`, fsynced.
fn copy_parts(sources: &[(PathBuf, u64)], to: &Path) -> Result<(), ApiError> {
    let mut out = std::fs::File::create(to)?;
    for (path, len) in sources {
        let copied = std::io::copy(&mut std::fs::File::open(path)?.take(*len), &mut out)?;
        if copied != *len {
            return Err(ApiError::Internal(format!("{} is short", path.display())));
        }
    }
    out.flush()?;
    out.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn concat(value: &str) -> Result<Concat, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert("upload-concat", HeaderValue::from_str(value).unwrap());
        of(&headers)
    }

    #[test]
    fn a_final_upload_names_its_parts_by_url_or_path() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let value =
            format!("final;http://127.0.0.1:8080/api/client/v1/tus/{a} /api/client/v1/tus/{b}");
        assert_eq!(concat(&value).unwrap(), Concat::Final(vec![a, b]));
        assert_eq!(concat("partial").unwrap(), Concat::Partial);
        assert_eq!(of(&HeaderMap::new()).unwrap(), Concat::Single);
        assert_eq!(
            header_value(&Concat::Final(vec![a, b])).unwrap(),
            format!("final;/api/client/v1/tus/{a} /api/client/v1/tus/{b}")
        );
    }

    #[test]
    fn other_values_are_refused() {
        let a = Uuid::new_v4();
        for value in [
            "whole".to_string(),
            "final;".to_string(),
            format!("final;/api/client/v1/uploads/{a}"),
            format!("final;/api/client/v1/tus/{a}/x"),
            format!("final;/api/client/v1/tus/{a} /api/client/v1/tus/{a}"),
            "final;/api/client/v1/tus/not-an-id".to_string(),
        ] {
            assert!(concat(&value).is_err(), "{value}");
        }
    }
}
