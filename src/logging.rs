//! Log output for the `vidpipe` command: `tracing` events to stderr, as
//! human-readable text or one JSON object per line, with libav's own log
//! lines (warnings and above) routed into the same stream.

use std::ffi::{c_char, c_int, c_void, CStr};

use ffmpeg_next::ffi;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the process-wide subscriber and captures libav's log. `filter` is
/// a `tracing` filter such as `info` or `info,vidpipe=debug`; libav's lines
/// have the target `libav`.
pub fn init(
    format: LogFormat,
    filter: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_new(filter)?;
    // Colours only on a terminal: a file or a log collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init()?,
        // The request span's fields (request_id, method, route) go with each event.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()?,
    }
    capture_libav();
    Ok(())
}

/// Replaces libav's default logger (raw lines on stderr) with [`libav_log`].
pub fn capture_libav() {
    // SAFETY: the callback has the signature libav declares, may run on any
    // thread (it only formats into a local buffer and calls `tracing`), and
    // is a plain function that lives for the whole process.
    unsafe { ffi::av_log_set_callback(Some(libav_log)) };
}

/// libav's `va_list` argument as its callback receives it.
#[cfg(target_arch = "x86_64")]
type VaList = *mut ffi::__va_list_tag;
/// libav's `va_list` argument as its callback receives it.
#[cfg(not(target_arch = "x86_64"))]
type VaList = ffi::va_list;

/// Longest libav log line kept; longer ones are cut.
const LIBAV_LINE_BYTES: usize = 1024;

/// One libav log call: warnings and above become `tracing` events.
unsafe extern "C" fn libav_log(avcl: *mut c_void, level: c_int, fmt: *const c_char, args: VaList) {
    if level > ffi::AV_LOG_WARNING {
        return;
    }
    let mut line = [0 as c_char; LIBAV_LINE_BYTES];
    let mut print_prefix: c_int = 1;
    // SAFETY: `avcl`, `fmt` and `args` come from libav unchanged; the buffer
    // and its length match, and libav always NUL-terminates what it writes.
    let written = unsafe {
        ffi::av_log_format_line2(
            avcl,
            level,
            fmt,
            args,
            line.as_mut_ptr(),
            LIBAV_LINE_BYTES as c_int,
            &mut print_prefix,
        )
    };
    if written < 0 {
        return;
    }
    // SAFETY: NUL-terminated within the buffer (see above).
    let text = unsafe { CStr::from_ptr(line.as_ptr()) }.to_string_lossy();
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    if level <= ffi::AV_LOG_ERROR {
        tracing::error!(target: "libav", "{text}");
    } else {
        tracing::warn!(target: "libav", "{text}");
    }
}
