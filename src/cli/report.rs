//! How an error reaches the user: once, each cause after what it caused.
//!
//! The convention (docs/architecture.md, "Errors"): an error's message names what failed
//! and, where it has a cause, carries that cause in its own text (thiserror's `{source}`);
//! context added at the CLI edge (anyhow's `.context`) names only what was being done.
//! Walking the chain would print every embedded cause twice ("…: Permission denied (os
//! error 13): Permission denied (os error 13)"), so a cause is printed only when the
//! message above it does not already say it.

/// The whole chain of `err` in one line, every cause once.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut above = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !above.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        above = text;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("open {path}: {source}")]
    struct Open {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_the_message_already_carries_is_not_repeated() {
        let inner = Open { path: "/x".into(), source: std::io::Error::from_raw_os_error(libc::EACCES) };
        let err = anyhow::Error::new(inner).context("import image");
        assert_eq!(one_line(&err), "import image: open /x: Permission denied (os error 13)");
    }

    #[test]
    fn a_cause_the_message_does_not_carry_is_printed_after_it() {
        let err = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOENT)).context("read pod.yaml");
        assert_eq!(one_line(&err), "read pod.yaml: No such file or directory (os error 2)");
    }
}
