//! BGP community values: `A:B` (RFC 1997, 16-bit halves) and `large:A:B:C` (RFC 8092, 32-bit
//! parts). Aliases (names from a Community CR or `bgp-communities`) are resolved by the builder.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Community {
    Legacy(u16, u16),
    Large(u32, u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommunityError {
    #[error("expected A:B (16-bit numbers) or large:A:B:C (32-bit numbers)")]
    Shape,
    #[error("{0:?} is not a 16-bit number")]
    Not16Bit(String),
    #[error("{0:?} is not a 32-bit number")]
    Not32Bit(String),
}

impl Community {
    /// Whether `text` looks like a literal value rather than an alias name. As MetalLB: anything
    /// with a `:` is a literal (and must parse), anything else is an alias.
    pub fn is_literal(text: &str) -> bool {
        text.contains(':')
    }

    pub fn parse(text: &str) -> Result<Community, CommunityError> {
        let parts: Vec<&str> = text.trim().split(':').collect();
        match parts.as_slice() {
            [a, b] => Ok(Community::Legacy(
                number(a, CommunityError::Not16Bit)?,
                number(b, CommunityError::Not16Bit)?,
            )),
            [large, a, b, c] if large.eq_ignore_ascii_case("large") => Ok(Community::Large(
                number(a, CommunityError::Not32Bit)?,
                number(b, CommunityError::Not32Bit)?,
                number(c, CommunityError::Not32Bit)?,
            )),
            _ => Err(CommunityError::Shape),
        }
    }
}

fn number<T: std::str::FromStr>(
    text: &str,
    error: fn(String) -> CommunityError,
) -> Result<T, CommunityError> {
    // Decimal digits only: `FromStr` for integers would accept a leading `+`.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error(text.to_string()));
    }
    text.parse().map_err(|_| error(text.to_string()))
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Community::Legacy(a, b) => write!(f, "{a}:{b}"),
            Community::Large(a, b, c) => write!(f, "large:{a}:{b}:{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            Community::parse("65535:65281"),
            Ok(Community::Legacy(65535, 65281))
        );
        assert_eq!(
            Community::parse("large:4294967295:1:2"),
            Ok(Community::Large(u32::MAX, 1, 2))
        );
        assert_eq!(
            Community::parse("65536:1"),
            Err(CommunityError::Not16Bit("65536".into()))
        );
        assert_eq!(Community::parse("1:2:3"), Err(CommunityError::Shape));
        assert_eq!(
            Community::parse("+1:2"),
            Err(CommunityError::Not16Bit("+1".into()))
        );
    }
}
