//! What a fresh machine lacks: the Debian packages the lab and the tests run. The list is defined
//! here once; `cargo xtask lab up` installs the lab's part of it and `cargo xtask test` all of it,
//! when they run as root on Debian or Ubuntu.

use std::path::Path;
use std::process::Command;

use anyhow::bail;

/// A Debian package and why it is needed.
pub struct Package {
    pub name: &'static str,
    /// Whether `cargo xtask lab up` (and the demo) needs it; the tests need every package.
    pub lab: bool,
    pub why: &'static str,
}

/// Every Debian package the lab and the tests use.
pub const PACKAGES: &[Package] = &[
    Package {
        name: "iproute2",
        lab: true,
        why: "ip, bridge: namespaces, veth pairs, addresses, routes",
    },
    Package {
        name: "procps",
        lab: true,
        why: "sysctl in every lab namespace",
    },
    Package {
        name: "frr",
        lab: true,
        why: "the lab router (zebra, bgpd, bfdd, vtysh)",
    },
    Package {
        name: "openssl",
        lab: true,
        why: "the control plane's PKI",
    },
    Package {
        name: "nftables",
        lab: true,
        why: "nft: the demo's kube-proxy stand-in",
    },
    Package {
        name: "python3",
        lab: true,
        why: "the demo's HTTP responders (python3 -m http.server)",
    },
    Package {
        name: "curl",
        lab: true,
        why: "the client's and ext's probes",
    },
    Package {
        name: "iputils-arping",
        lab: true,
        why: "arping: who answers ARP",
    },
    Package {
        name: "iputils-ping",
        lab: true,
        why: "ping",
    },
    Package {
        name: "ndisc6",
        lab: true,
        why: "ndisc6: who answers NDP",
    },
    Package {
        name: "psmisc",
        lab: true,
        why: "fuser, killall, pstree: looking at the lab's processes",
    },
    Package {
        name: "tcpdump",
        lab: false,
        why: "packet captures in the end-to-end tests",
    },
    Package {
        name: "bird2",
        lab: false,
        why: "BIRD as the router in the BGP interoperability tests",
    },
    Package {
        name: "gobgpd",
        lab: false,
        why: "GoBGP as the router in the BGP interoperability tests",
    },
    Package {
        name: "prometheus",
        lab: false,
        why: "promtool (alert rules) and the observability test's Prometheus",
    },
    Package {
        name: "fonts-dejavu-core",
        lab: true,
        why: "DejaVu Sans, the text of the PNG plots (cargo xtask lab chaos)",
    },
    Package {
        name: "buildah",
        lab: false,
        why: "cargo xtask image and its test (an OCI image from scratch)",
    },
];

/// Which part of [`PACKAGES`] a command needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Lab,
    Tests,
}

impl Needs {
    fn includes(self, package: &Package) -> bool {
        match self {
            Needs::Lab => package.lab,
            Needs::Tests => true,
        }
    }
}

/// The packages of `needs` that dpkg does not list as installed.
pub fn missing(needs: Needs) -> Vec<&'static Package> {
    PACKAGES
        .iter()
        .filter(|package| needs.includes(package) && !installed(package.name))
        .collect()
}

fn installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).ends_with(" installed")
        })
}

/// Whether `/etc/os-release` (its text given) describes Debian or a derivative (Ubuntu...).
pub fn is_debian_like(os_release: &str) -> bool {
    os_release.lines().any(|line| {
        let Some((key, value)) = line.split_once('=') else {
            return false;
        };
        let value = value.trim().trim_matches(['"', '\'']);
        (key == "ID" || key == "ID_LIKE")
            && value
                .split_whitespace()
                .any(|id| id == "debian" || id == "ubuntu")
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Installs the missing packages of `needs` with apt-get when running as root on Debian or
/// Ubuntu, printing what it installs. Elsewhere it prints what is missing and returns: the lab then
/// stops with its own error, and the tests that need a missing tool skip (or, with `CI` set,
/// fail).
pub fn ensure_packages(needs: Needs) -> anyhow::Result<()> {
    let missing = missing(needs);
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|package| package.name).collect();
    let debian = std::fs::read_to_string("/etc/os-release").is_ok_and(|text| is_debian_like(&text))
        && Path::new("/usr/bin/apt-get").exists();
    if !debian || !is_root() {
        println!(
            "[setup] missing Debian packages: {} ({}; run as root on Debian/Ubuntu to have them installed, or `apt-get install {}`)",
            names.join(" "),
            if debian {
                "not root"
            } else {
                "not Debian or Ubuntu"
            },
            names.join(" ")
        );
        return Ok(());
    }
    println!("[setup] installing Debian packages:");
    for package in &missing {
        println!("[setup]   {:<15} {}", package.name, package.why);
    }
    let mut update = Command::new("apt-get");
    update
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    crate::run_inherited(update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&names)
        .env("DEBIAN_FRONTEND", "noninteractive");
    crate::run_inherited(install)?;
    let still = self::missing(needs);
    if !still.is_empty() {
        let names: Vec<&str> = still.iter().map(|package| package.name).collect();
        bail!(
            "apt-get install finished but dpkg still lacks: {}",
            names.join(" ")
        );
    }
    println!("[setup] installed: {}", names.join(" "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_and_derivatives_are_recognised() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nID=debian\n";
        let ubuntu = "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\n";
        let mint = "ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n";
        let fedora = "NAME=\"Fedora Linux\"\nID=fedora\n";
        let tricky = "ID=arch\nVARIANT_ID=debian\n";
        assert!(is_debian_like(debian));
        assert!(is_debian_like(ubuntu));
        assert!(is_debian_like(mint));
        assert!(!is_debian_like(fedora));
        assert!(!is_debian_like(tricky));
    }

    #[test]
    fn the_list_has_no_duplicates_and_the_lab_part_is_a_subset() {
        let mut names: Vec<&str> = PACKAGES.iter().map(|package| package.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a package is listed twice");
        assert!(
            PACKAGES
                .iter()
                .any(|package| package.name == "frr" && package.lab)
        );
        assert!(
            PACKAGES
                .iter()
                .any(|package| package.name == "buildah" && !package.lab)
        );
    }

    /// The package list is defined here only: `.ci/run` must not carry a second one, and the
    /// README must name every package (it tells a reader what the commands install).
    #[test]
    fn ci_and_readme_follow_the_list() {
        let root = ferrolb_tests::paths::workspace_root();
        let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
        for package in PACKAGES {
            assert!(
                !ci.split(|c: char| c.is_whitespace() || c == '"')
                    .any(|word| word == package.name),
                ".ci/run names package {}: the list lives in xtask/src/setup.rs only",
                package.name
            );
        }
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        for package in PACKAGES {
            assert!(
                readme.contains(&format!("`{}`", package.name)),
                "README.md does not name package `{}`",
                package.name
            );
        }
    }
}
