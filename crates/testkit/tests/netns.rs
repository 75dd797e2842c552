//! Netns lifecycle with real namespaces (root only; skipped otherwise unless CI=true).
use std::process::Command;
use std::time::{Duration, Instant};

use isthmus_testkit::{Netns, Pid, netns, require_root};

fn alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

fn wait_gone(pid: Pid) -> bool {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn drop_kills_process_groups_and_deletes_the_namespace() {
    if !require_root("drop_kills_process_groups_and_deletes_the_namespace") {
        return;
    }
    let _ = isthmus_testkit::cleanup_stale("tk");
    let ns = Netns::new("tk").unwrap();
    let name = ns.name().to_string();
    assert!(netns::list().unwrap().contains(&name));
    // A shell with a grandchild in its process group.
    let sh = ns
        .spawn(
            "sh",
            &["-c", "sleep 300 & echo started; wait"],
            &[],
            "sh.log",
        )
        .unwrap();
    let grandchild = ns.wait_until("the grandchild", Duration::from_secs(5), || {
        netns::children(sh)
            .into_iter()
            .find(|(_, comm)| comm == "sleep")
            .map(|(p, _)| p)
            .ok_or_else(|| "no sleep yet".to_string())
    });
    // Loopback is up: something listens and answers inside the namespace only.
    let out = ns.run("ip", &["-o", "link", "show", "lo"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("UP"));
    assert!(ns.is_running(sh));
    drop(ns);
    assert!(wait_gone(sh), "the shell survived");
    assert!(wait_gone(grandchild), "its grandchild survived");
    assert!(!netns::list().unwrap().contains(&name));
}

#[test]
fn cleanup_runs_on_panic() {
    if !require_root("cleanup_runs_on_panic") {
        return;
    }
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let ns = Netns::new("tk").unwrap();
        let pid = ns.spawn("sleep", &["300"], &[], "sleep.log").unwrap();
        *seen.lock().unwrap() = Some((ns.name().to_string(), pid, ns.dir().to_path_buf()));
        ns.fail("deliberate");
    });
    let err = result.expect_err("it panicked");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.starts_with("deliberate\n"), "{msg}");
    assert!(
        msg.contains("sleep.log"),
        "the logs are in the message: {msg}"
    );
    let (name, pid, dir) = seen.lock().unwrap().take().unwrap();
    assert!(wait_gone(pid));
    assert!(!netns::list().unwrap().contains(&name));
    // A failed test's logs are kept for reading.
    assert!(dir.join("sleep.log").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cleanup_stale_removes_namespaces_of_dead_runs() {
    if !require_root("cleanup_stale_removes_namespaces_of_dead_runs") {
        return;
    }
    // A pid above any pid_max: its run is certainly gone.
    let name = "isthmus-t-tkstale-2147483000-0";
    let _ = Command::new("ip").args(["netns", "del", name]).output();
    assert!(
        Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap()
            .success()
    );
    let mut orphan = Command::new("ip")
        .args(["netns", "exec", name, "sleep", "300"])
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(orphan.id() as i32);
    let start = Instant::now();
    while !Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&pid.to_string()))
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "sleep never entered {name}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mine = Netns::new("tkstale").unwrap();
    let removed = isthmus_testkit::cleanup_stale("tkstale").unwrap();
    assert_eq!(removed, [name]);
    let _ = orphan.wait();
    assert!(!alive(pid));
    let names = netns::list().unwrap();
    assert!(!names.contains(&name.to_string()));
    assert!(
        names.contains(&mine.name().to_string()),
        "a live run's namespace stays"
    );
}
