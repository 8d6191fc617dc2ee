//! The firewall interface and its backends.
