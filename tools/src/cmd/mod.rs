//! One module per subcommand.

pub mod cat;
pub mod demo;
pub mod layout;
pub mod node;
pub mod proxy;
pub mod pump;
pub mod sim;
pub mod xs;
