//! Simulated event channels: brokered binding, direct notification between processes, Linux
//! evtchn masking semantics, timeouts, pollability, errors and limits.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use support::{Host, say, spawn};
use vchan_xenif::sim::broker::BrokerConfig;
use vchan_xenif::{Backend, DomId, Error, EventChannels, EventPort};

const ROUND_TRIPS: usize = 1000;

fn readable(ev: &dyn EventChannels, timeout_ms: u16) -> bool {
    let mut fds = [PollFd::new(ev.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(timeout_ms)).unwrap() == 1
}

fn child(role: &str) {
    let backend = Backend::detect().expect("sim backend from the environment");
    let ev = backend.event_channels().unwrap();
    let remote = EventPort(support::env("PORT").parse().unwrap());
    let port = ev.bind_interdomain(DomId(0), remote).unwrap();
    match role {
        // Answer every event with one, ROUND_TRIPS times.
        "echo" => {
            say("READY");
            for _ in 0..ROUND_TRIPS {
                let got = ev.wait(Some(support::DEADLINE)).unwrap();
                assert_eq!(got, Some(port));
                ev.unmask(port).unwrap();
                ev.notify(port).unwrap();
            }
            say("DONE");
        }
        // Notify as fast as possible until killed (a hostile or merely busy peer).
        "hammer" => {
            say("READY");
            loop {
                ev.notify(port).unwrap();
            }
        }
        // Bind, then wait to be killed.
        "bind-and-wait" => {
            say(&format!("READY {port}"));
            support::hear();
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn notifications_go_directly_between_processes() {
    if let Some(role) = support::child_role() {
        return child(&role);
    }
    let host = Host::new(&[0, 1]);
    let ev = host.backend(0).event_channels().unwrap();
    let port = ev.bind_unbound(DomId(1)).unwrap();
    let mut c = spawn(
        "notifications_go_directly_between_processes",
        "echo",
        host.path(),
        DomId(1),
        &[("PORT", port.0.to_string())],
    );
    c.expect("READY");
    for i in 0..ROUND_TRIPS {
        ev.notify(port).unwrap();
        let got = ev.wait(Some(support::DEADLINE)).unwrap();
        assert_eq!(got, Some(port), "round trip {i} lost");
        ev.unmask(port).unwrap();
    }
    c.expect("DONE");
    c.wait_success();
    // Exactly one answer per event: nothing is left over.
    assert_eq!(ev.pending().unwrap(), None);
}

#[test]
fn notifications_need_no_host_once_bound() {
    if let Some(role) = support::child_role() {
        return child(&role);
    }
    let Host { broker, dir } = Host::new(&[0, 1]);
    let ev = vchan_xenif::sim::client::SimEventChannels::connect(dir.path(), DomId(0)).unwrap();
    let port = ev.bind_unbound(DomId(1)).unwrap();
    let mut c = spawn(
        "notifications_need_no_host_once_bound",
        "echo",
        dir.path(),
        DomId(1),
        &[("PORT", port.0.to_string())],
    );
    c.expect("READY");
    // Stop the host: its thread ends and every connection to it closes. The channel is two
    // eventfds the processes share, so notifications keep flowing.
    drop(broker);
    for i in 0..ROUND_TRIPS {
        ev.notify(port).unwrap();
        let got = ev.wait(Some(support::DEADLINE)).unwrap();
        assert_eq!(got, Some(port), "round trip {i} lost");
        ev.unmask(port).unwrap();
    }
    c.expect("DONE");
    c.wait_success();
    // Binding, which needs the host, now fails clearly.
    match ev.bind_unbound(DomId(1)) {
        Err(e @ Error::Sim { .. }) => assert!(e.to_string().contains("host stopped"), "{e}"),
        other => panic!("bound without a host: {other:?}"),
    }
}

#[test]
fn a_fired_port_stays_masked_until_unmasked() {
    let host = Host::new(&[0, 1]);
    let ev0 = host.backend(0).event_channels().unwrap();
    let ev1 = host.backend(1).event_channels().unwrap();
    let p0 = ev0.bind_unbound(DomId(1)).unwrap();
    let p1 = ev1.bind_interdomain(DomId(0), p0).unwrap();

    assert_eq!(ev1.pending().unwrap(), None);
    // Several events before anyone looks: one delivery.
    for _ in 0..3 {
        ev0.notify(p0).unwrap();
    }
    assert_eq!(ev1.pending().unwrap(), Some(p1));
    assert_eq!(ev1.pending().unwrap(), None, "masked port delivered twice");
    // Unmasking with nothing new pending delivers nothing.
    ev1.unmask(p1).unwrap();
    assert_eq!(ev1.pending().unwrap(), None);
    // An event while masked is kept, and delivered at unmask (as Linux evtchn does).
    assert_eq!(ev1.wait(Some(Duration::ZERO)).unwrap(), None);
    ev0.notify(p0).unwrap();
    assert_eq!(ev1.pending().unwrap(), Some(p1));
    ev0.notify(p0).unwrap();
    assert_eq!(ev1.pending().unwrap(), None);
    ev1.unmask(p1).unwrap();
    assert_eq!(ev1.pending().unwrap(), Some(p1));
    ev1.unmask(p1).unwrap();
    assert_eq!(ev1.pending().unwrap(), None);
    // The other direction works the same way, independently.
    ev1.notify(p1).unwrap();
    assert_eq!(ev0.wait(Some(support::DEADLINE)).unwrap(), Some(p0));
    assert_eq!(ev1.pending().unwrap(), None);
}

#[test]
fn a_peer_notifying_a_masked_port_in_a_loop_keeps_nobody_busy() {
    if let Some(role) = support::child_role() {
        return child(&role);
    }
    let host = Host::new(&[0, 1]);
    let ev = host.backend(0).event_channels().unwrap();
    let port = ev.bind_unbound(DomId(1)).unwrap();
    let mut c = spawn(
        "a_peer_notifying_a_masked_port_in_a_loop_keeps_nobody_busy",
        "hammer",
        host.path(),
        DomId(1),
        &[("PORT", port.0.to_string())],
    );
    c.expect("READY");
    // The first event is delivered and masks the port.
    assert_eq!(ev.wait(Some(support::DEADLINE)).unwrap(), Some(port));
    for _ in 0..5 {
        // While masked, the flood neither delivers nor keeps wait from timing out.
        let t = Duration::from_millis(100);
        let start = Instant::now();
        assert_eq!(ev.wait(Some(t)).unwrap(), None);
        let took = start.elapsed();
        assert!(
            took < t + Duration::from_secs(2),
            "wait({t:?}) under a notification flood took {took:?}"
        );
        assert_eq!(ev.pending().unwrap(), None);
        // The edge that disarmed the port has been absorbed: the descriptor is quiet.
        assert!(
            !readable(&*ev, 50),
            "the descriptor stays readable under a flood on a masked port"
        );
        // Unmasking delivers (the port fired while masked), and masks it again.
        ev.unmask(port).unwrap();
        assert_eq!(ev.wait(Some(support::DEADLINE)).unwrap(), Some(port));
    }
    c.kill();
}

#[test]
fn wait_honours_its_timeout() {
    let host = Host::new(&[0, 1]);
    let ev = host.backend(0).event_channels().unwrap();
    let _p = ev.bind_unbound(DomId(1)).unwrap();
    for ms in [0u64, 1, 30] {
        let t = Duration::from_millis(ms);
        let start = Instant::now();
        assert_eq!(ev.wait(Some(t)).unwrap(), None);
        let took = start.elapsed();
        assert!(took >= t, "wait({t:?}) returned after {took:?}");
        assert!(
            took < t + Duration::from_secs(5),
            "wait({t:?}) took {took:?}"
        );
    }
}

#[test]
fn the_handle_descriptor_is_pollable() {
    let host = Host::new(&[0, 1]);
    let ev0 = host.backend(0).event_channels().unwrap();
    let ev1 = host.backend(1).event_channels().unwrap();
    let p0 = ev0.bind_unbound(DomId(1)).unwrap();
    let p1 = ev1.bind_interdomain(DomId(0), p0).unwrap();
    // A second channel on the same handle.
    let q0 = ev0.bind_unbound(DomId(1)).unwrap();
    let q1 = ev1.bind_interdomain(DomId(0), q0).unwrap();
    assert_ne!(p1, q1);

    assert!(!readable(&*ev1, 0));
    ev0.notify(q0).unwrap();
    assert!(readable(&*ev1, 5000));
    assert_eq!(ev1.pending().unwrap(), Some(q1));
    assert!(
        !readable(&*ev1, 0),
        "readable while the only fired port is masked"
    );
    ev0.notify(p0).unwrap();
    assert!(readable(&*ev1, 5000));
    assert_eq!(ev1.wait(None).unwrap(), Some(p1));
    assert!(!readable(&*ev1, 0));
    // An event on a masked port (absorbed by a look that delivers nothing) makes the
    // descriptor readable again when the port is unmasked, until it is delivered.
    ev0.notify(q0).unwrap();
    assert_eq!(ev1.pending().unwrap(), None);
    assert!(!readable(&*ev1, 0));
    ev1.unmask(q1).unwrap();
    assert!(
        readable(&*ev1, 0),
        "unmasking a port that fired did not make the handle readable"
    );
    assert_eq!(ev1.pending().unwrap(), Some(q1));
    assert!(!readable(&*ev1, 0));
    // Unbinding a queued port takes it off the queue.
    ev0.notify(p0).unwrap();
    assert_eq!(ev1.pending().unwrap(), None);
    ev1.unmask(p1).unwrap();
    assert!(readable(&*ev1, 0));
    ev1.unbind(p1).unwrap();
    assert!(!readable(&*ev1, 0));
    assert_eq!(ev1.pending().unwrap(), None);
}

#[test]
fn binding_mistakes_are_clear_errors() {
    let host = Host::new(&[0, 1, 2]);
    let ev0 = host.backend(0).event_channels().unwrap();
    let ev1 = host.backend(1).event_channels().unwrap();
    let ev2 = host.backend(2).event_channels().unwrap();
    let port_err = |r: vchan_xenif::Result<EventPort>, want: &str| match r {
        Err(Error::Port { reason, .. }) => assert!(reason.contains(want), "{reason}"),
        other => panic!("expected a port error containing {want:?}, got {other:?}"),
    };

    port_err(ev1.bind_interdomain(DomId(0), EventPort(5)), "no such port");
    port_err(
        ev1.bind_interdomain(DomId(7), EventPort(1)),
        "does not exist",
    );
    let for2 = ev0.bind_unbound(DomId(2)).unwrap();
    port_err(
        ev1.bind_interdomain(DomId(0), for2),
        "allocated for domain 2, not for domain 1",
    );
    let _p2 = ev2.bind_interdomain(DomId(0), for2).unwrap();
    port_err(ev2.bind_interdomain(DomId(0), for2), "already connected");
    assert!(matches!(
        ev0.bind_unbound(DomId(9)),
        Err(Error::InvalidArgument(_))
    ));
    // Ports this handle does not have.
    let other_handle = host.backend(0).event_channels().unwrap();
    for r in [
        other_handle.notify(for2),
        other_handle.unmask(for2),
        other_handle.unbind(for2),
        ev0.notify(EventPort(99)),
    ] {
        assert!(matches!(r, Err(Error::Port { .. })), "{r:?}");
    }
    ev0.unbind(for2).unwrap();
    assert!(matches!(ev0.unbind(for2), Err(Error::Port { .. })));
}

#[test]
fn the_port_limit_is_a_clear_error() {
    let config = BrokerConfig {
        max_ports_per_domain: 3,
        ..BrokerConfig::default()
    };
    let host = Host::with_config(config, &[0, 1]);
    let ev = host.backend(0).event_channels().unwrap();
    let ports: Vec<EventPort> = (0..3).map(|_| ev.bind_unbound(DomId(1)).unwrap()).collect();
    assert_eq!(ports, [EventPort(1), EventPort(2), EventPort(3)]);
    match ev.bind_unbound(DomId(1)) {
        Err(e @ Error::Sim { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("all 3 of its event-channel ports"), "{msg}");
            assert!(msg.contains("max_ports_per_domain"), "{msg}");
        }
        other => panic!("port limit not enforced: {other:?}"),
    }
    // A freed number is reused, lowest first, as Xen does.
    ev.unbind(EventPort(2)).unwrap();
    assert_eq!(ev.bind_unbound(DomId(1)).unwrap(), EventPort(2));
}

#[test]
fn a_closed_end_reverts_the_other_to_unbound() {
    let host = Host::new(&[0, 1]);
    let ev0 = host.backend(0).event_channels().unwrap();
    let p0 = ev0.bind_unbound(DomId(1)).unwrap();
    {
        let ev1 = host.backend(1).event_channels().unwrap();
        let p1 = ev1.bind_interdomain(DomId(0), p0).unwrap();
        ev1.notify(p1).unwrap();
        assert_eq!(ev0.wait(Some(support::DEADLINE)).unwrap(), Some(p0));
        ev0.unmask(p0).unwrap();
        ev1.unbind(p1).unwrap();
    }
    // Nobody listens: notifying is allowed, and the event is dropped (as Xen drops it).
    ev0.notify(p0).unwrap();
    let ev1 = host.backend(1).event_channels().unwrap();
    let p1 = ev1.bind_interdomain(DomId(0), p0).unwrap();
    assert_eq!(
        ev1.pending().unwrap(),
        None,
        "an event sent while unbound was kept"
    );
    ev0.notify(p0).unwrap();
    assert_eq!(ev1.wait(Some(support::DEADLINE)).unwrap(), Some(p1));
    // Dropping the handle closes its ports too.
    drop(ev1);
    support::eventually("the dropped handle's port is closed", || {
        host.broker.stats().ports == 1
    });
    let ev1 = host.backend(1).event_channels().unwrap();
    assert!(ev1.bind_interdomain(DomId(0), p0).is_ok());
}

#[test]
fn a_killed_process_releases_its_ports() {
    if let Some(role) = support::child_role() {
        return child(&role);
    }
    let host = Host::new(&[0, 1]);
    let ev0 = host.backend(0).event_channels().unwrap();
    let p0 = ev0.bind_unbound(DomId(1)).unwrap();
    let mut c = spawn(
        "a_killed_process_releases_its_ports",
        "bind-and-wait",
        host.path(),
        DomId(1),
        &[("PORT", p0.0.to_string())],
    );
    c.expect("READY");
    assert_eq!(host.broker.stats().ports, 2);
    c.kill();
    assert_eq!(c.wait().signal(), Some(libc::SIGKILL));
    support::eventually("the killed process's port is closed", || {
        host.broker.stats().ports == 1
    });
    // Our port can be bound again by the domain's next process.
    let ev1 = host.backend(1).event_channels().unwrap();
    let p1 = ev1.bind_interdomain(DomId(0), p0).unwrap();
    ev1.notify(p1).unwrap();
    assert_eq!(ev0.wait(Some(support::DEADLINE)).unwrap(), Some(p0));
}

#[test]
fn a_domain_can_signal_itself() {
    let host = Host::new(&[0]);
    let ev = host.backend(0).event_channels().unwrap();
    let a = ev.bind_unbound(DomId(0)).unwrap();
    let b = ev.bind_interdomain(DomId(0), a).unwrap();
    ev.notify(a).unwrap();
    assert_eq!(ev.wait(Some(support::DEADLINE)).unwrap(), Some(b));
    ev.notify(b).unwrap();
    assert_eq!(ev.wait(Some(support::DEADLINE)).unwrap(), Some(a));
}
