//! Reading a small file a user names (a chat template, a presets file, a
//! manifest) without trusting what it is: only a regular file, and only up
//! to a size.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// The bytes of `path`, at most `max_bytes` of them. Anything but a regular
/// file (a FIFO, a device such as `/dev/zero`, a folder) is refused without
/// being read: on Unix it is opened with `O_NONBLOCK`, so opening a FIFO
/// with no writer does not wait, and its type is taken from the open file,
/// not from a path that could be swapped in between. A larger file is
/// refused after `max_bytes + 1` bytes, never read whole, and the memory
/// for the file is reserved fallibly. Each is [`Error::Io`] naming the path.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("t.jinja");
/// std::fs::write(&path, "{{ x }}")?;
/// assert_eq!(llama_safe::files::read_regular(&path, 64)?, b"{{ x }}");
/// assert!(llama_safe::files::read_regular(&path, 3).is_err());
/// # #[cfg(unix)]
/// assert!(llama_safe::files::read_regular("/dev/zero".as_ref(), 64).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let fail = |source: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: source.into(),
    };
    let refuse = |why: String| fail(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(refuse(
            "not a regular file (a FIFO, a device or a folder is not read)".into(),
        ));
    }
    if meta.len() > max_bytes {
        return Err(refuse(format!(
            "{} bytes, over the {max_bytes} read",
            meta.len()
        )));
    }
    // Reserved fallibly: a file larger than memory (or a huge sparse one,
    // where `max_bytes` allows it) is an error, not an abort.
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(meta.len() as usize).map_err(|_| {
        refuse(format!(
            "{} bytes: more than can be read into memory",
            meta.len()
        ))
    })?;
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() as u64 > max_bytes {
        return Err(refuse(format!("over the {max_bytes} bytes read")));
    }
    Ok(bytes)
}
