//! The local media folder's files over HTTP: conditional requests
//! ([`super::validators`]), byte ranges ([`super::range`]: one as `206`,
//! several as `multipart/byteranges`) and bodies read in chunks off the
//! executor, never whole into memory.

use std::collections::VecDeque;
use std::fs::Metadata;
use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use warp::filters::BoxedFilter;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::range::{self, Ranges};
use super::validators::Validators;
use super::{header_value, media_path, MediaPath};
use crate::api::error::ApiError;
use crate::api::{with_state, AppState};
use crate::storage::content_type;

/// Bytes read from the file per chunk of the body.
const CHUNK: usize = 128 * 1024;

/// Stored files never change: caches may keep them for a year.
const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// The route's filter for files of the local media folder.
pub fn serve(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    warp::method()
        .and(media_path(state))
        .and(warp::header::headers_cloned())
        .and(with_state(state.clone()))
        .and_then(answer)
        .boxed()
}

async fn answer(
    method: Method,
    path: MediaPath,
    request: HeaderMap,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let at = state
        .services
        .layout
        .media_root()
        .join(&path.token)
        .join(&path.name);
    answer_file(
        &method,
        &request,
        &state,
        vec![at],
        &path.name,
        CACHE_CONTROL,
    )
    .await
}

/// The answer to a `GET` or `HEAD` of the file named `name` (its type comes
/// from the name), at the first of `places` that has it, cached as
/// `cache_control` says.
pub(super) async fn answer_file(
    method: &Method,
    request: &HeaderMap,
    state: &AppState,
    places: Vec<PathBuf>,
    name: &str,
    cache_control: &'static str,
) -> Result<Response, Rejection> {
    // The open and its fstat block.
    let retry_after = state.services.config.retry_after;
    let (file, meta) = state
        .services
        .blocking(move || open_first(places))
        .await
        .map_err(ApiError::from)?
        .map_err(|e| match e {
            // Out of file descriptors is a moment's overload, not a fault.
            Opened::OutOfFiles => ApiError::Busy { retry_after },
            Opened::Refused(e) => e,
        })?;
    let validators = Validators::of(&meta);
    let mut response = Response::default();
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    validators.insert_into(headers);
    let kind = content_type(name);
    let (status, pieces) = select(method, request, &validators, meta.len(), kind, headers)?;
    // Not on a 412 or 416: they answer one request's conditions, not the file.
    if matches!(
        status,
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
    ) {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        );
    }
    *response.status_mut() = status;
    if status == StatusCode::NOT_MODIFIED {
        return Ok(response);
    }
    let length: u64 = pieces.iter().map(Piece::len).sum();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    // HEAD: the headers of the GET, its Content-Length included, no body.
    if method == Method::GET && length > 0 {
        let body = FileBody::new(tokio::fs::File::from_std(file), pieces);
        *response.body_mut() = warp::reply::stream(body).into_response().into_body();
    }
    Ok(response)
}

/// The status and the body the request gets (RFC 9110 13.2.2, then 14),
/// with the headers that describe that body written to `headers`.
fn select(
    method: &Method,
    request: &HeaderMap,
    validators: &Validators,
    len: u64,
    kind: &'static str,
    headers: &mut HeaderMap,
) -> Result<(StatusCode, VecDeque<Piece>), ApiError> {
    if let Some(status) = validators.precondition(request) {
        return Ok((status, VecDeque::new()));
    }
    // Range is defined for GET only (RFC 9110 14.2); If-Range may void it.
    let ranges = match request.get(header::RANGE).map(HeaderValue::to_str) {
        Some(Ok(range)) if method == Method::GET && validators.range_applies(request) => {
            range::parse(range, len)
        }
        _ => Ranges::Whole,
    };
    let answer = match ranges {
        Ranges::Whole => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            (StatusCode::OK, VecDeque::from([Piece::File(0..len)]))
        }
        Ranges::Parts(parts) => match parts.as_slice() {
            [part] => {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
                headers.insert(header::CONTENT_RANGE, content_range(part, len));
                let pieces = VecDeque::from([Piece::File(part.clone())]);
                (StatusCode::PARTIAL_CONTENT, pieces)
            }
            _ => {
                let boundary = boundary()?;
                let multipart = format!("multipart/byteranges; boundary={boundary}");
                headers.insert(header::CONTENT_TYPE, header_value(&multipart));
                let pieces = byteranges(&parts, len, &boundary, kind);
                (StatusCode::PARTIAL_CONTENT, pieces)
            }
        },
        Ranges::Unsatisfiable => {
            let all = header_value(&format!("bytes */{len}"));
            headers.insert(header::CONTENT_RANGE, all);
            (StatusCode::RANGE_NOT_SATISFIABLE, VecDeque::new())
        }
    };
    Ok(answer)
}

/// Opens a regular file. What a client can name (a missing file, a folder, a
/// file taken as a folder, a name too long) is a 404; any other failure is
/// the server's own.
fn open(at: PathBuf) -> Result<(std::fs::File, Metadata), Opened> {
    let opened = std::fs::File::open(&at).and_then(|file| Ok((file.metadata()?, file)));
    match opened {
        Ok((meta, file)) if meta.is_file() => Ok((file, meta)),
        Ok(_) => Err(Opened::Refused(ApiError::NotFound)),
        Err(e) if names_nothing(&e) => Err(Opened::Refused(ApiError::NotFound)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
            Err(Opened::OutOfFiles)
        }
        Err(e) => Err(Opened::Refused(ApiError::Internal(format!(
            "{}: {e}",
            at.display()
        )))),
    }
}

/// The first of `places` that is a regular file, tried in turn: a file
/// renamed from one to the next meanwhile is found all the same.
fn open_first(places: Vec<PathBuf>) -> Result<(std::fs::File, Metadata), Opened> {
    let mut answer = Err(Opened::Refused(ApiError::NotFound));
    for at in places {
        answer = open(at);
        if !matches!(answer, Err(Opened::Refused(ApiError::NotFound))) {
            break;
        }
    }
    answer
}

/// Why [`open`] gave no file.
#[derive(Debug)]
enum Opened {
    /// The process is out of file descriptors (a 503, not a fault).
    OutOfFiles,
    /// The answer to give.
    Refused(ApiError),
}

fn names_nothing(e: &io::Error) -> bool {
    use io::ErrorKind::{IsADirectory, NotADirectory, NotFound};
    matches!(e.kind(), NotFound | NotADirectory | IsADirectory)
        || e.raw_os_error() == Some(libc::ENAMETOOLONG)
}

fn content_range(part: &Range<u64>, len: u64) -> HeaderValue {
    header_value(&format!("bytes {}-{}/{len}", part.start, part.end - 1))
}

/// A random multipart boundary: 128 bits cannot turn up inside the file by chance.
fn boundary() -> Result<String, ApiError> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw)
        .map_err(|e| ApiError::Internal(format!("multipart boundary: {e}")))?;
    Ok(hex::encode(raw))
}

/// The body of a `multipart/byteranges` answer (RFC 9110 14.6): each part
/// with its Content-Type and Content-Range, then the closing delimiter.
fn byteranges(parts: &[Range<u64>], len: u64, boundary: &str, kind: &str) -> VecDeque<Piece> {
    let mut pieces = VecDeque::with_capacity(2 * parts.len() + 1);
    for (at, part) in parts.iter().enumerate() {
        let before = if at == 0 { "" } else { "\r\n" };
        let head = format!(
            "{before}--{boundary}\r\nContent-Type: {kind}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
            part.start,
            part.end - 1
        );
        pieces.push_back(Piece::Text(head.into()));
        pieces.push_back(Piece::File(part.clone()));
    }
    pieces.push_back(Piece::Text(format!("\r\n--{boundary}--\r\n").into()));
    pieces
}

/// One piece of a response body.
enum Piece {
    /// Framing written by the server (a multipart header or delimiter).
    Text(Bytes),
    /// A span of the file.
    File(Range<u64>),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Text(text) => text.len() as u64,
            Piece::File(span) => span.end - span.start,
        }
    }
}

/// A body of pieces sent in order, the file's read [`CHUNK`] by chunk
/// (tokio's file reads run on its blocking pool).
struct FileBody {
    file: tokio::fs::File,
    pieces: VecDeque<Piece>,
    /// The file's offset: where the next read starts.
    offset: u64,
    /// What is left to send of the span being read.
    reading: Option<Range<u64>>,
    /// A seek to `reading`'s start was started and has not completed.
    seeking: bool,
    /// Where chunks are read into.
    buf: BytesMut,
}

impl FileBody {
    fn new(file: tokio::fs::File, pieces: VecDeque<Piece>) -> FileBody {
        FileBody {
            file,
            pieces,
            offset: 0,
            reading: None,
            seeking: false,
            buf: BytesMut::new(),
        }
    }

    /// The next chunk of the span being read.
    fn poll_chunk(&mut self, cx: &mut Context<'_>, span: Range<u64>) -> Poll<io::Result<Bytes>> {
        if self.seeking {
            ready!(Pin::new(&mut self.file).poll_complete(cx))?;
            self.seeking = false;
            self.offset = span.start;
        }
        let want = (span.end - span.start).min(CHUNK as u64) as usize;
        self.buf.resize(want, 0);
        let mut read = ReadBuf::new(&mut self.buf[..want]);
        ready!(Pin::new(&mut self.file).poll_read(cx, &mut read))?;
        let got = read.filled().len();
        if got == 0 {
            // Stored files do not shrink; if one did, an error ends the
            // response rather than a body shorter than its Content-Length.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended before its stated length",
            )));
        }
        let chunk = self.buf.split_to(got).freeze();
        self.buf.clear();
        self.offset += got as u64;
        self.reading = (self.offset < span.end).then_some(self.offset..span.end);
        Poll::Ready(Ok(chunk))
    }
}

impl Stream for FileBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let body = &mut *self;
        loop {
            if let Some(span) = body.reading.clone() {
                return body.poll_chunk(cx, span).map(Some);
            }
            match body.pieces.pop_front() {
                None => return Poll::Ready(None),
                Some(Piece::Text(text)) => return Poll::Ready(Some(Ok(text))),
                Some(Piece::File(span)) if span.is_empty() => {}
                Some(Piece::File(span)) => {
                    if span.start != body.offset {
                        let seek = Pin::new(&mut body.file).start_seek(SeekFrom::Start(span.start));
                        if let Err(e) = seek {
                            return Poll::Ready(Some(Err(e)));
                        }
                        body.seeking = true;
                    }
                    body.reading = Some(span);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_client_names_is_404_and_other_failures_are_the_servers() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("video.mp4");
        std::fs::write(&file, b"mp4").unwrap();
        assert_eq!(open(file.clone()).unwrap().1.len(), 3);
        let long = "a".repeat(300);
        for named in [
            dir.path().join("missing"),
            dir.path().to_path_buf(),
            file.join("x"),
            dir.path().join(&long),
        ] {
            assert!(
                matches!(
                    open(named.clone()),
                    Err(Opened::Refused(ApiError::NotFound))
                ),
                "{named:?}"
            );
        }
        // A symlink loop is no name a client can make: the server's fault.
        let looped = dir.path().join("loop");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        assert!(matches!(
            open(looped),
            Err(Opened::Refused(ApiError::Internal(_)))
        ));
    }
}
