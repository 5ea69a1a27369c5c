//! Files as people have them, and outputs that are never half-written.
//!
//! - [`load_image`]: the one image loader of the engine (CLI `segment`, `apply`, `eval`,
//!   masks): the format comes from the content, EXIF orientation is applied, and a truncated
//!   JPEG is an error instead of a grey lower half.
//! - [`AtomicOutput`]: a temporary file in the destination folder, renamed over the
//!   destination only once complete ([`AtomicOutput::persist`]); dropped, it leaves nothing
//!   and an existing destination untouched.
//! - [`refuse_same_file`]: an output that is one of the inputs (any spelling, symlink or hard
//!   link) is refused before anything is written.

use crate::{EngineError, Result};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

fn image_error(path: &Path, reason: impl ToString) -> EngineError {
    EngineError::Image {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads and decodes an image file, upright.
///
/// The format is guessed from the first bytes (a PNG named `.jpg` reads as PNG), falling back
/// to the extension. The EXIF orientation tag (JPEG, PNG `eXIf`, WebP; the `image` crate's
/// `ImageDecoder::orientation`) is applied, so a phone photo stored sideways comes out as it is
/// displayed. A JPEG whose markers end before the end-of-image marker (a cut download) is an
/// error: the decoder would otherwise fill the missing rows with grey.
///
/// # Errors
/// [`EngineError::Image`] naming the file: unreadable, unknown format, truncated or corrupt.
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    let bytes = fs::read(path).map_err(|e| image_error(path, e))?;
    let mut reader = ImageReader::new(Cursor::new(&bytes[..]))
        .with_guessed_format()
        .map_err(|e| image_error(path, e))?;
    if reader.format().is_none() {
        match ImageFormat::from_path(path) {
            Ok(format) => reader.set_format(format),
            Err(_) => {
                return Err(image_error(
                    path,
                    "not an image format this program reads (JPEG, PNG, WebP, BMP)",
                ))
            }
        }
    }
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(&bytes) {
        return Err(image_error(
            path,
            "the JPEG is truncated (it ends before its end-of-image marker)",
        ));
    }
    let mut decoder = reader.into_decoder().map_err(|e| image_error(path, e))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| image_error(path, e))?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Whether a JPEG's marker segments run from SOI to an EOI marker (ITU T.81 annex B): each
/// segment's length is followed, and entropy-coded data after SOS is skipped up to the next
/// marker (`FF` followed by anything but `00` stuffing or `D0..D7` restarts). Data after EOI
/// (e.g. a motion photo's video) is allowed.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    loop {
        // Skip fill bytes before a marker.
        while i < bytes.len() && bytes[i] == 0xFF && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if i + 1 >= bytes.len() || bytes[i] != 0xFF {
            return false;
        }
        let marker = bytes[i + 1];
        i += 2;
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        if i + 1 >= bytes.len() {
            return false;
        }
        let len = u16::from_be_bytes([bytes[i], bytes[i + 1]]) as usize;
        if len < 2 {
            return false;
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data: up to the next real marker.
            loop {
                if i + 1 >= bytes.len() {
                    return false;
                }
                if bytes[i] == 0xFF && !matches!(bytes[i + 1], 0x00 | 0xD0..=0xD7 | 0xFF) {
                    break;
                }
                i += 1;
            }
        }
    }
}

/// Refuses to write `output` when it is the same file as one of `inputs`, compared by device
/// and inode (Unix) or canonical path (elsewhere), so `./in.jpg`, `/abs/in.jpg`, a symlink and
/// a hard link to the input are all caught. An output that does not exist yet passes.
///
/// # Errors
/// [`EngineError::SameFile`] naming both paths.
pub fn refuse_same_file(output: &Path, inputs: &[&Path]) -> Result<()> {
    let Ok(out_meta) = fs::metadata(output) else {
        return Ok(());
    };
    for input in inputs {
        let Ok(in_meta) = fs::metadata(input) else {
            continue;
        };
        if same_file(output, &out_meta, input, &in_meta) {
            return Err(EngineError::SameFile {
                output: output.to_path_buf(),
                input: input.to_path_buf(),
            });
        }
    }
    Ok(())
}

#[cfg(unix)]
fn same_file(_: &Path, a: &fs::Metadata, _: &Path, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(a: &Path, _: &fs::Metadata, b: &Path, _: &fs::Metadata) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// An output written to a temporary file beside its destination (same folder, so the final
/// rename is atomic on one file system) and renamed into place by [`AtomicOutput::persist`].
///
/// The temporary name is `.<name>.<random>.<ext>`: hidden, and with the destination's
/// extension so encoders that pick the format from it (ffmpeg, `image`) still do. Dropping an
/// `AtomicOutput` without persisting removes the temporary file. A destination that is a
/// symlink is written through: its target is replaced.
#[derive(Debug)]
pub struct AtomicOutput {
    temp: tempfile::TempPath,
    dest: PathBuf,
}

impl AtomicOutput {
    /// Creates the temporary file for `dest` (permissions as a new file would get: 0666
    /// less the umask, or those of the existing destination).
    ///
    /// # Errors
    /// [`EngineError::Output`] when the destination folder does not exist or is not
    /// writable.
    pub fn new(dest: &Path) -> Result<Self> {
        let fail = |e: std::io::Error| EngineError::Output {
            path: dest.to_path_buf(),
            // tempfile appends "at path <the temporary name>": the user never sees that name.
            reason: e
                .to_string()
                .split(" at path ")
                .next()
                .unwrap_or("")
                .to_string(),
        };
        // Write through a symlink to its target.
        let dest = fs::canonicalize(dest).unwrap_or_else(|_| dest.to_path_buf());
        if dest.is_dir() {
            return Err(fail(std::io::Error::other("it is a folder")));
        }
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(fail(std::io::Error::other(format!(
                "the folder {} does not exist",
                dir.display()
            ))));
        }
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let suffix = dest
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(&suffix);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&dest)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o666);
            builder.permissions(fs::Permissions::from_mode(mode));
        }
        let file = builder.tempfile_in(&dir).map_err(fail)?;
        Ok(Self {
            temp: file.into_temp_path(),
            dest,
        })
    }

    /// Where to write the content.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// The final path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Renames the complete temporary file over the destination.
    ///
    /// # Errors
    /// [`EngineError::Output`] if the rename fails (the temporary file is removed).
    pub fn persist(self) -> Result<PathBuf> {
        let dest = self.dest;
        self.temp.persist(&dest).map_err(|e| EngineError::Output {
            path: dest.clone(),
            reason: e.error.to_string(),
        })?;
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_completeness_follows_markers() {
        let photo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/photos/ccp-webcam-dev-0286.jpg");
        let bytes = fs::read(photo).unwrap();
        assert!(jpeg_is_complete(&bytes));
        // Trailing data after EOI (a motion photo's video) is fine.
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b"\0\0\0\x18ftypmp42");
        assert!(jpeg_is_complete(&trailing));
        for cut in [2, 300, bytes.len() / 2, bytes.len() - 2] {
            assert!(!jpeg_is_complete(&bytes[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn atomic_output_leaves_nothing_until_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.png");
        fs::write(&dest, b"old").unwrap();
        {
            let out = AtomicOutput::new(&dest).unwrap();
            assert_eq!(out.path().parent(), Some(dir.path()));
            assert!(out.path().to_string_lossy().ends_with(".png"));
            fs::write(out.path(), b"half").unwrap();
        }
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        use std::os::unix::fs::PermissionsExt;
        #[cfg(unix)]
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o640)).unwrap();
        let out = AtomicOutput::new(&dest).unwrap();
        fs::write(out.path(), b"new").unwrap();
        out.persist().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        #[cfg(unix)]
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
