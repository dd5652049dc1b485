//! End-to-end test harness (see issue: control plane and network lab).
