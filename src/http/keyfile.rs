//! The cluster's secret key in a file of the data directory: `pg_pulse/secret.key` (the folder
//! mode 0700, the file 0600, owned by the server's OS user), created on first use. Plain Rust
//! file IO on a given data directory (the shell passes PostgreSQL's `DataDir`), so that it is
//! tested without a server.
//!
//! Creation is atomic: the key is written and flushed to a temporary file of its own (O_EXCL,
//! mode 0600), then linked to its final name, which fails if another process got there first;
//! the loser reads the winner's key. A reader never sees a half-written key, and an existing
//! key is never replaced.

use super::seal::{Key, KEY_LEN};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The key file, relative to the data directory.
pub const KEY_FILE: &str = "pg_pulse/secret.key";
const HEADER: &str = "pg_pulse secret key v1\n";

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// The key's file content.
fn render(key: &Key) -> String {
    let hex: String = key.bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("{HEADER}{hex}\n")
}

fn parse(text: &[u8]) -> Option<Key> {
    let text = std::str::from_utf8(text).ok()?;
    let hex = text.strip_prefix(HEADER)?.strip_suffix('\n')?;
    if hex.len() != 2 * KEY_LEN {
        return None;
    }
    let mut b = [0u8; KEY_LEN];
    for (i, out) in b.iter_mut().enumerate() {
        *out = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Key::from_bytes(b))
}

/// The key, or None if there is no key file yet.
pub fn load(data_dir: &Path) -> Result<Option<Key>, String> {
    let p = path(data_dir);
    match std::fs::read(&p) {
        Ok(bytes) => parse(&bytes).map(Some).ok_or_else(|| {
            format!(
                "the key file \"{}\" is not a pg_pulse key (it must hold what pg_pulse wrote)",
                p.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "could not read the key file \"{}\": {e}",
            p.display()
        )),
    }
}

/// The key, created first if there is none (random bytes from the OS).
pub fn load_or_create(data_dir: &Path) -> Result<Key, String> {
    if let Some(k) = load(data_dir)? {
        return Ok(k);
    }
    let mut b = [0u8; KEY_LEN];
    getrandom::getrandom(&mut b)
        .map_err(|e| format!("the operating system gave no random bytes: {e}"))?;
    create(data_dir, &Key::from_bytes(b))?;
    // ours, or the one another process linked first
    load(data_dir)?.ok_or_else(|| "the key file vanished just after it was created".to_string())
}

/// Writes `key` as the key file unless one exists (then it is left as it is).
fn create(data_dir: &Path, key: &Key) -> Result<(), String> {
    let p = path(data_dir);
    let dir = p.parent().unwrap_or(data_dir);
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("could not create \"{}\": {e}", dir.display())),
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        "secret.key.tmp.{}.{nanos}.{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(render(key).as_bytes())?;
        f.sync_all()
    };
    let linked = write().and_then(|()| match std::fs::hard_link(&tmp, &p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    });
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(|e| format!("could not create the key file \"{}\": {e}", p.display()))?;
    // the new name is durable before any value is sealed with the key
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pulse_keyfile_{tag}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn created_once_with_mode_0600_and_kept() {
        let d = tmpdir("once");
        assert!(load(&d).unwrap().is_none());
        let k = load_or_create(&d).unwrap();
        let meta = std::fs::metadata(path(&d)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir_meta = std::fs::metadata(d.join("pg_pulse")).unwrap();
        assert_eq!(dir_meta.permissions().mode() & 0o777, 0o700);
        assert_eq!(load_or_create(&d).unwrap().bytes(), k.bytes());
        assert_eq!(load(&d).unwrap().unwrap().bytes(), k.bytes());
        // no temporary files are left behind
        assert_eq!(std::fs::read_dir(d.join("pg_pulse")).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn racing_creators_agree_on_one_key() {
        let d = tmpdir("race");
        let keys: Vec<[u8; KEY_LEN]> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| *load_or_create(&d).unwrap().bytes()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| k == &keys[0]), "one key for all");
        assert_eq!(std::fs::read_dir(d.join("pg_pulse")).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_damaged_key_file_is_an_error_never_replaced() {
        let d = tmpdir("damaged");
        load_or_create(&d).unwrap();
        std::fs::write(path(&d), "something else\n").unwrap();
        let e = load_or_create(&d).unwrap_err();
        assert!(e.contains("is not a pg_pulse key"), "{e}");
        assert!(!e.contains("something"), "{e}");
        assert_eq!(
            std::fs::read_to_string(path(&d)).unwrap(),
            "something else\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_file_format_round_trips() {
        let k = Key::from_bytes([0xab; KEY_LEN]);
        let t = render(&k);
        assert!(t.starts_with(HEADER) && t.ends_with("abab\n"));
        assert_eq!(parse(t.as_bytes()).unwrap().bytes(), k.bytes());
        assert!(parse(&t.as_bytes()[..t.len() - 2]).is_none());
        assert!(parse(t.replace("ab", "zz").as_bytes()).is_none());
    }
}
