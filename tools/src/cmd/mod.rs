//! One module per subcommand.

pub mod layout;
