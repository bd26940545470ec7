//! One module per subcommand.

pub mod layout;
pub mod sim;
pub mod xs;
