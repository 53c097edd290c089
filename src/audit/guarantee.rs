//! Reading a [`Guarantee`] from its name (`async`, `os`, `disk`): command
//! lines and configuration files name it so.

use std::fmt;
use std::str::FromStr;

use super::Guarantee;

/// A name that is not `async`, `os` or `disk`; it hands the name back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseGuaranteeError(pub String);

impl fmt::Display for ParseGuaranteeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown guarantee {:?}: use \"async\", \"os\" or \"disk\"",
            self.0
        )
    }
}

impl std::error::Error for ParseGuaranteeError {}

impl FromStr for Guarantee {
    type Err = ParseGuaranteeError;

    /// The guarantee named `async`, `os` or `disk` (as
    /// [`as_str`](Guarantee::as_str) writes it).
    ///
    /// ```
    /// use latchfree::audit::Guarantee;
    ///
    /// assert_eq!("disk".parse::<Guarantee>(), Ok(Guarantee::Disk));
    /// assert!("fsync".parse::<Guarantee>().is_err());
    /// ```
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [Guarantee::Async, Guarantee::Os, Guarantee::Disk]
            .into_iter()
            .find(|g| g.as_str() == name)
            .ok_or_else(|| ParseGuaranteeError(name.to_owned()))
    }
}

#[cfg(all(test, not(latchfree_loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back() {
        for g in [Guarantee::Async, Guarantee::Os, Guarantee::Disk] {
            assert_eq!(g.as_str().parse::<Guarantee>(), Ok(g));
        }
        assert_eq!(
            "Disk".parse::<Guarantee>(),
            Err(ParseGuaranteeError("Disk".into()))
        );
        assert_eq!(
            "".parse::<Guarantee>(),
            Err(ParseGuaranteeError(String::new()))
        );
    }
}
