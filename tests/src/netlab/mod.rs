//! The network lab: Linux network namespaces joined by veth pairs and a bridge.
