//! Application names, the way users name what runs on a host: a container (docker,
//! containerd, cri-o; the Kubernetes pod and container when the cgroup path shows them),
//! else a systemd unit, else the process name; a process that listens on TCP adds its port.
//!
//! Pure: the caller reads `/proc/PID/cgroup` and the listening ports (see `procfs.rs`).

/// One line of `/proc/PID/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLine<'a> {
    pub hierarchy: &'a str,
    pub controllers: &'a str,
    pub path: &'a str,
}

/// The lines of `/proc/PID/cgroup` (v1 hierarchies and the v2 `0::` line alike); lines that
/// do not have three fields are skipped.
pub fn parse_cgroup_file(text: &str) -> Vec<CgroupLine<'_>> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            Some(CgroupLine {
                hierarchy: fields.next()?,
                controllers: fields.next()?,
                path: fields.next()?,
            })
        })
        .collect()
}

/// A container found in a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// `docker`, `containerd`, `cri-o`.
    pub runtime: &'static str,
    /// The full container id (64 hex digits).
    pub id: String,
    /// The Kubernetes pod uid (dashed form) when the path is under `kubepods`.
    pub pod_uid: Option<String>,
}

impl Container {
    /// `docker:0123456789ab`, or `k8s:<pod uid>/<container id, 12 digits>`.
    pub fn name(&self) -> String {
        let short = &self.id[..12];
        match &self.pod_uid {
            Some(pod) => format!("k8s:{pod}/{short}"),
            None => format!("{}:{short}", self.runtime),
        }
    }
}

fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container of a path component: `docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope` (systemd driver), or a bare id under `docker/` or a `kubepods` pod
/// (cgroupfs driver; the runtime is then named by the parent: `docker` or, under kubepods,
/// the runtime is not shown by the path and is reported as `containerd`).
fn container_of_component(parent: Option<&str>, component: &str) -> Option<Container> {
    const SCOPES: [(&str, &str); 3] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
    ];
    if let Some(unit) = component.strip_suffix(".scope") {
        for (prefix, runtime) in SCOPES {
            if let Some(id) = unit.strip_prefix(prefix) {
                if is_container_id(id) {
                    return Some(Container {
                        runtime,
                        id: id.to_string(),
                        pod_uid: None,
                    });
                }
            }
        }
        return None;
    }
    if !is_container_id(component) {
        return None;
    }
    let runtime = match parent {
        Some("docker") => "docker",
        Some(p) if p.starts_with("pod") => "containerd",
        Some("crio") => "cri-o",
        _ => return None,
    };
    Some(Container {
        runtime,
        id: component.to_string(),
        pod_uid: None,
    })
}

/// The pod uid of a path component: `pod<uid>` (cgroupfs) or
/// `kubepods[-<class>]-pod<uid with underscores>.slice` (systemd).
fn pod_uid_of_component(component: &str) -> Option<String> {
    let uid = if let Some(slice) = component.strip_suffix(".slice") {
        let at = slice.find("-pod")?;
        if !slice.starts_with("kubepods") {
            return None;
        }
        &slice[at + 4..]
    } else {
        component.strip_prefix("pod")?
    };
    let uid = uid.replace('_', "-");
    let looks_like_uid = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    looks_like_uid.then_some(uid)
}

/// The container a cgroup path shows, with its Kubernetes pod when under `kubepods`.
pub fn container_of_path(path: &str) -> Option<Container> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let under_kubepods = components
        .first()
        .is_some_and(|c| *c == "kubepods" || *c == "kubepods.slice");
    let mut pod_uid = None;
    let mut parent = None;
    for component in &components {
        if under_kubepods {
            if let Some(uid) = pod_uid_of_component(component) {
                pod_uid = Some(uid);
            }
        }
        if let Some(mut container) = container_of_component(parent, component) {
            if under_kubepods {
                container.pod_uid = pod_uid.clone();
            }
            return Some(container);
        }
        parent = Some(component);
    }
    None
}

/// The systemd unit a cgroup path ends in (`*.service`, `*.scope`), the innermost one. Login
/// sessions (`session-N.scope`), user managers (`user@N.service`) and `init.scope` hold
/// unrelated processes: they name nothing.
pub fn systemd_unit_of_path(path: &str) -> Option<&str> {
    path.split('/').rev().find(|component| {
        let is_unit = component.ends_with(".service") || component.ends_with(".scope");
        let is_shared = (component.starts_with("session-") && component.ends_with(".scope"))
            || (component.starts_with("user@") && component.ends_with(".service"))
            || *component == "init.scope";
        is_unit && !is_shared
    })
}

/// The cgroup path to show for a process: the v2 line's path unless it is the root, else
/// the first v1 path that names a container or unit, else the v2 (or first) path.
pub fn chosen_cgroup_path<'a>(lines: &[CgroupLine<'a>]) -> &'a str {
    let v2 = lines
        .iter()
        .find(|l| l.hierarchy == "0" && l.controllers.is_empty());
    if let Some(v2) = v2.filter(|l| l.path != "/") {
        return v2.path;
    }
    lines
        .iter()
        .find(|l| container_of_path(l.path).is_some() || systemd_unit_of_path(l.path).is_some())
        .or(v2)
        .or(lines.first())
        .map_or("", |l| l.path)
}

/// The application name of a process from every line of its `/proc/PID/cgroup`, its process
/// name and the TCP port it listens on (if any): the container, else the systemd unit, else
/// the process name; ` :PORT` follows when it listens.
pub fn application_name(
    cgroup_lines: &[CgroupLine<'_>],
    process_name: &str,
    listening_port: Option<u16>,
) -> String {
    let base = cgroup_lines
        .iter()
        .find_map(|l| container_of_path(l.path).map(|c| c.name()))
        .or_else(|| {
            cgroup_lines
                .iter()
                .find_map(|l| systemd_unit_of_path(l.path).map(str::to_string))
        })
        .unwrap_or_else(|| process_name.to_string());
    match listening_port {
        Some(port) => format!("{base} :{port}"),
        None => base,
    }
}

/// The process name: the kernel's `comm`, or, when `comm` is cut at 15 bytes, the base name
/// of `argv[0]` it is the start of (`clickhouse-serv` → `clickhouse-server`).
pub fn process_name(comm: &str, argv0: &str) -> String {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    if comm.len() == 15 && base.len() > 15 && base.starts_with(comm) {
        base.to_string()
    } else {
        comm.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4c0a9e2b1d8c7f6e5d4c3b2a19087f6e5d4c3b2a19087f6e5d4c3b2a190876";
    const POD: &str = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";

    fn app(cgroup: &str) -> String {
        application_name(&parse_cgroup_file(cgroup), "python3", None)
    }

    #[test]
    fn docker_with_the_cgroupfs_and_the_systemd_driver() {
        assert_eq!(
            app(&format!("4:memory:/docker/{ID}\n0::/\n")),
            "docker:3f4c0a9e2b1d"
        );
        assert_eq!(
            app(&format!("0::/system.slice/docker-{ID}.scope\n")),
            "docker:3f4c0a9e2b1d"
        );
    }

    #[test]
    fn containerd_and_cri_o_scopes() {
        assert_eq!(
            app(&format!("0::/system.slice/cri-containerd-{ID}.scope\n")),
            "containerd:3f4c0a9e2b1d"
        );
        assert_eq!(
            app(&format!("0::/machine.slice/crio-{ID}.scope\n")),
            "cri-o:3f4c0a9e2b1d"
        );
    }

    #[test]
    fn kubernetes_pod_and_container_in_the_cgroup_v1_layout() {
        let text = format!(
            "12:pids:/kubepods/burstable/pod{POD}/{ID}\n4:memory:/kubepods/burstable/pod{POD}/{ID}\n1:name=systemd:/kubepods/burstable/pod{POD}/{ID}\n"
        );
        assert_eq!(app(&text), format!("k8s:{POD}/3f4c0a9e2b1d"));
        // A guaranteed pod sits right under kubepods.
        assert_eq!(
            app(&format!("3:cpu:/kubepods/pod{POD}/{ID}\n")),
            format!("k8s:{POD}/3f4c0a9e2b1d")
        );
    }

    #[test]
    fn kubernetes_pod_and_container_in_the_cgroup_v2_systemd_layout() {
        let uid = POD.replace('-', "_");
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(app(&text), format!("k8s:{POD}/3f4c0a9e2b1d"));
        let besteffort = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/crio-{ID}.scope\n"
        );
        assert_eq!(app(&besteffort), format!("k8s:{POD}/3f4c0a9e2b1d"));
    }

    #[test]
    fn systemd_units_and_shared_units_that_name_nothing() {
        assert_eq!(
            app("0::/system.slice/clickhouse-server.service\n"),
            "clickhouse-server.service"
        );
        assert_eq!(
            app("0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-batch.scope\n"),
            "app-batch.scope"
        );
        assert_eq!(
            app("0::/user.slice/user-1000.slice/session-3.scope\n"),
            "python3"
        );
        assert_eq!(app("0::/init.scope\n"), "python3");
        // A unit made by hand under the hybrid v2 mount, beside v1 lines.
        assert_eq!(
            app("9:name=systemd:/\n4:memory:/\n0::/nightly-batch.service\n"),
            "nightly-batch.service"
        );
    }

    #[test]
    fn hybrid_hosts_read_every_hierarchy_and_ids_of_other_shapes_are_not_containers() {
        // v2 root for every process; a v1 hierarchy shows the unit.
        assert_eq!(
            app("9:name=systemd:/system.slice/cron.service\n0::/\n"),
            "cron.service"
        );
        // A 32-digit id in a v1 path is not a container id of a known runtime.
        assert_eq!(
            app("4:memory:/process_api/39915b89bccfe2817f2206790ae57253\n0::/\n"),
            "python3"
        );
        assert_eq!(app(""), "python3");
    }

    #[test]
    fn a_listening_process_is_named_with_its_port() {
        let lines = parse_cgroup_file("0::/\n");
        assert_eq!(
            application_name(&lines, "clickhouse-server", Some(9001)),
            "clickhouse-server :9001"
        );
        let unit = parse_cgroup_file("0::/system.slice/zookeeper.service\n");
        assert_eq!(
            application_name(&unit, "java", Some(2181)),
            "zookeeper.service :2181"
        );
    }

    #[test]
    fn the_chosen_cgroup_path_prefers_a_meaningful_one() {
        let text = format!("4:memory:/docker/{ID}\n0::/\n");
        let lines = parse_cgroup_file(&text);
        assert_eq!(chosen_cgroup_path(&lines), format!("/docker/{ID}"));
        let lines = parse_cgroup_file("4:memory:/x\n0::/batch.service\n");
        assert_eq!(chosen_cgroup_path(&lines), "/batch.service");
        let lines = parse_cgroup_file("4:memory:/x\n0::/\n");
        assert_eq!(chosen_cgroup_path(&lines), "/");
    }

    #[test]
    fn process_names_cut_by_the_kernel_are_completed_from_argv0() {
        assert_eq!(
            process_name("clickhouse-serv", "/usr/bin/clickhouse-server"),
            "clickhouse-server"
        );
        assert_eq!(process_name("batch-loader", "python3"), "batch-loader");
        assert_eq!(process_name("clickhouse-serv", "other"), "clickhouse-serv");
    }
}
