//! What a job may touch: the capability list the host checks every guest request against.
//!
//! A grant is a local folder or file, or a URL prefix, with read or read-write access. Local
//! locations are compared after resolving `.`/`..` and symbolic links (of the longest part of
//! the path that exists), so a link inside a granted folder that points elsewhere is refused.
//! URLs are compared as text on `/` boundaries; one with a `..` segment is refused outright.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use medallion_core::storage::{is_url, wildcard_at};

/// Read, or read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

#[derive(Debug, Clone)]
enum Place {
    Local(PathBuf),
    Url(String),
}

#[derive(Debug, Clone)]
struct Grant {
    place: Place,
    access: Access,
}

/// The paths and URLs one job may read and write.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    grants: Vec<Grant>,
}

/// A request outside the grants, with what was asked and what was granted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("refused: the job was not granted {what} access to {location} (granted: {granted})")]
pub struct Refused {
    pub location: String,
    pub what: &'static str,
    pub granted: String,
}

impl Grants {
    pub fn new() -> Self {
        Self::default()
    }

    /// Grants a folder (and everything below it), a file, or a URL prefix.
    pub fn allow(&mut self, location: &str, access: Access) {
        let place = if is_url(location) {
            Place::Url(location.trim_end_matches('/').to_string())
        } else {
            Place::Local(resolve(Path::new(location)))
        };
        self.grants.push(Grant { place, access });
    }

    /// Grants what a source path or glob can match: the file, or the folder a glob starts in.
    pub fn allow_pattern(&mut self, location: &str, access: Access) {
        match wildcard_at(location) {
            None => self.allow(location, access),
            Some(i) => {
                let fixed = &location[..i];
                let dir = match fixed.rfind('/') {
                    Some(j) => &fixed[..j.max(1)],
                    None => ".",
                };
                self.allow(dir, access);
            }
        }
    }

    /// Whether `location` may be read (`write` false) or written.
    pub fn check(&self, location: &str, write: bool) -> Result<(), Refused> {
        let wanted = if write {
            Access::ReadWrite
        } else {
            Access::Read
        };
        let ok = if is_url(location) {
            !has_dot_segment(location)
                && self.grants.iter().any(|g| match &g.place {
                    Place::Url(prefix) => {
                        permits(g.access, wanted) && under(location, prefix.as_str())
                    }
                    Place::Local(_) => false,
                })
        } else {
            let path = resolve(Path::new(location));
            self.grants.iter().any(|g| match &g.place {
                Place::Local(dir) => permits(g.access, wanted) && path.starts_with(dir),
                Place::Url(_) => false,
            })
        };
        if ok {
            Ok(())
        } else {
            Err(Refused {
                location: location.to_string(),
                what: if write { "write" } else { "read" },
                granted: self.to_string(),
            })
        }
    }
}

impl fmt::Display for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.grants.is_empty() {
            return write!(f, "nothing");
        }
        for (i, g) in self.grants.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            let access = match g.access {
                Access::Read => "read",
                Access::ReadWrite => "read-write",
            };
            match &g.place {
                Place::Local(p) => write!(f, "{} ({access})", p.display())?,
                Place::Url(u) => write!(f, "{u} ({access})")?,
            }
        }
        Ok(())
    }
}

fn permits(granted: Access, wanted: Access) -> bool {
    granted == Access::ReadWrite || wanted == Access::Read
}

/// `location` is `prefix` or below it.
fn under(location: &str, prefix: &str) -> bool {
    location == prefix
        || location
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
}

fn has_dot_segment(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.split(['/', '?', '#']).any(|s| s == ".." || s == ".")
        || lower.contains("%2e")
        || lower.contains('\\')
}

/// An absolute path with `.` and `..` resolved and symbolic links followed as far as the
/// path exists (what does not exist yet cannot be a link).
pub fn resolve(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut clean = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    let mut existing = clean.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return clean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_files_and_urls() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut g = Grants::new();
        g.allow(lake.to_str().unwrap(), Access::ReadWrite);
        g.allow_pattern(&format!("{}/orders/*.csv", data.display()), Access::Read);
        g.allow("http://h:1/data", Access::Read);

        assert!(g
            .check(&format!("{}/gold/t/x", lake.display()), true)
            .is_ok());
        assert!(g
            .check(&format!("{}/orders/1.csv", data.display()), false)
            .is_ok());
        assert!(g
            .check(&format!("{}/orders/1.csv", data.display()), true)
            .is_err());
        assert!(g
            .check(&format!("{}/other.csv", data.display()), false)
            .is_err());
        let err = g
            .check(&format!("{}/orders/../../secret", data.display()), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret") && err.contains("read access"),
            "{err}"
        );
        assert!(g.check("http://h:1/data/a.parquet", false).is_ok());
        assert!(g.check("http://h:1/database", false).is_err());
        assert!(g.check("http://h:1/data/../x", false).is_err());
        assert!(g.check("http://h:1/data/a", true).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_link_out_of_a_granted_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(dir.path().join("secret.csv"), "a\n1\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.csv"), data.join("x.csv")).unwrap();
        let mut g = Grants::new();
        g.allow(data.to_str().unwrap(), Access::Read);
        let err = g
            .check(data.join("x.csv").to_str().unwrap(), false)
            .unwrap_err();
        assert!(err.to_string().contains("x.csv"));
    }
}
