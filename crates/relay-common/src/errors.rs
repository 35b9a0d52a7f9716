//! Error text a person can act on: the error and every cause under it.

use std::error::Error;

/// The error and its causes joined with `": "`, e.g. `error sending request: client error
/// (Connect): tcp connect error: Connection refused (os error 111)`. Many errors display only
/// their outermost layer, which hides the one cause that says what to fix.
pub fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1
                .as_deref()
                .map(|inner| inner as &(dyn Error + 'static))
        }
    }

    #[test]
    fn joins_every_cause_outermost_first() {
        let error = Layer(
            "request failed",
            Some(Box::new(Layer(
                "connect",
                Some(Box::new(Layer("connection refused", None))),
            ))),
        );
        assert_eq!(
            error_chain(&error),
            "request failed: connect: connection refused"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }
}
