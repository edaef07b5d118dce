//! Whole transactions between [`HostAuth`] and [`ControllerAuth`], and the
//! attacks the controller must refuse.

use std::sync::Arc;

use super::controller::{ControllerAuth, ReceiveError};
use super::host::HostAuth;
use super::messages::{Framing, Message, Reply};
use super::tests::TestEntropy;
use super::{AuthConfig, DhGroup, DhchapSecret, FailureReason, HashId};

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001";
const SUBNQN: &str = "nqn.2024-01.io.lull:vol1";
const AL: usize = 4096;

fn key(seed: u8, hash: Option<HashId>) -> DhchapSecret {
    DhchapSecret::from_key(hash, &[seed; 48]).unwrap()
}

fn config(ctrl_key: Option<DhchapSecret>) -> AuthConfig {
    AuthConfig::new(key(1, Some(HashId::Sha256)), ctrl_key, HOSTNQN, SUBNQN)
}

fn pin(mut c: AuthConfig, hash: HashId, group: DhGroup) -> Arc<AuthConfig> {
    c.hashes = vec![hash];
    c.dhgroups = vec![group];
    Arc::new(c)
}

/// Runs a transaction; returns the host's result and the controller.
fn run(host_cfg: Arc<AuthConfig>, ctrl_cfg: Arc<AuthConfig>) -> (Result<(), FailureReason>, ControllerAuth) {
    let mut e = TestEntropy(42);
    let mut ctrl = ControllerAuth::new(ctrl_cfg);
    let mut host = HostAuth::new(host_cfg, 3);
    let _ = ctrl.on_send(&host.negotiate(), &mut e);
    loop {
        let got = ctrl.on_receive(AL).unwrap();
        match host.on_message(&got, &mut e) {
            Ok(Some(send)) => {
                let _ = ctrl.on_send(&send, &mut e);
                if host.is_done() {
                    return (Ok(()), ctrl);
                }
            }
            Ok(None) => return (Ok(()), ctrl),
            Err(f) => {
                if let Some(f2) = f.failure2 {
                    let _ = ctrl.on_send(&f2, &mut e);
                }
                return (Err(f.reason), ctrl);
            }
        }
    }
}

#[test]
fn unidirectional_every_hash_and_group() {
    for hash in HashId::ALL {
        for group in DhGroup::ALL {
            let cfg = pin(config(None), hash, group);
            let (r, ctrl) = run(cfg.clone(), cfg);
            assert_eq!(r, Ok(()), "{hash:?} {group:?}");
            assert!(ctrl.is_authenticated(), "{hash:?} {group:?}");
        }
    }
}

#[test]
fn bidirectional_every_hash_with_null_and_a_dh_group() {
    for hash in HashId::ALL {
        for group in [DhGroup::Null, DhGroup::Ffdhe2048, DhGroup::Ffdhe3072] {
            let cfg = pin(config(Some(key(2, Some(HashId::Sha512)))), hash, group);
            let (r, ctrl) = run(cfg.clone(), cfg);
            assert_eq!(r, Ok(()), "{hash:?} {group:?}");
            assert!(ctrl.is_authenticated());
        }
    }
}

#[test]
fn controller_picks_its_preference_among_the_hosts_offers() {
    let mut e = TestEntropy(1);
    let mut host_cfg = config(None);
    host_cfg.hashes = vec![HashId::Sha256, HashId::Sha384];
    host_cfg.dhgroups = vec![DhGroup::Null, DhGroup::Ffdhe2048];
    let mut ctrl = ControllerAuth::new(Arc::new(config(None)));
    let mut host = HostAuth::new(Arc::new(host_cfg), 9);
    ctrl.on_send(&host.negotiate(), &mut e).unwrap();
    let Message::Challenge(c) = Message::decode(&ctrl.on_receive(AL).unwrap(), Framing::Exact).unwrap() else {
        panic!("no challenge")
    };
    assert_eq!((c.hash, c.dhgroup, c.t_id), (HashId::Sha384, DhGroup::Ffdhe2048, 9));
    assert_eq!(c.dh_value.len(), 256);
}

#[test]
fn wrong_host_key_is_refused_with_failed() {
    let good = pin(config(None), HashId::Sha256, DhGroup::Ffdhe2048);
    let mut wrong = (*good).clone();
    wrong.host_key = key(9, Some(HashId::Sha256));
    let (r, ctrl) = run(Arc::new(wrong), good);
    assert_eq!(r, Err(FailureReason::Failed));
    assert!(!ctrl.is_authenticated());
    assert_eq!(ctrl.last_failure(), Some(FailureReason::Failed));
}

#[test]
fn wrong_controller_key_is_refused_by_the_host() {
    let ctrl_cfg = pin(config(Some(key(2, None))), HashId::Sha384, DhGroup::Null);
    let mut host_cfg = (*ctrl_cfg).clone();
    host_cfg.ctrl_key = Some(key(3, None));
    let (r, ctrl) = run(Arc::new(host_cfg), ctrl_cfg);
    assert_eq!(r, Err(FailureReason::Failed));
    assert!(!ctrl.is_authenticated(), "the host's Failure2 ends it");
}

#[test]
fn bidirectional_without_a_controller_key_is_refused() {
    let host_cfg = pin(config(Some(key(2, None))), HashId::Sha256, DhGroup::Null);
    let ctrl_cfg = pin(config(None), HashId::Sha256, DhGroup::Null);
    let (r, ctrl) = run(host_cfg, ctrl_cfg);
    assert_eq!(r, Err(FailureReason::Failed));
    assert!(!ctrl.is_authenticated());
}

#[test]
fn unusable_offers_name_their_reason() {
    let ctrl_cfg = pin(config(None), HashId::Sha512, DhGroup::Ffdhe4096);
    let host = |h: HashId, g: DhGroup| pin(config(None), h, g);
    assert_eq!(
        run(host(HashId::Sha256, DhGroup::Ffdhe4096), ctrl_cfg.clone()).0,
        Err(FailureReason::HashUnusable)
    );
    assert_eq!(
        run(host(HashId::Sha512, DhGroup::Null), ctrl_cfg.clone()).0,
        Err(FailureReason::DhgroupUnusable)
    );
    // Secure channel concatenation is not offered.
    let mut e = TestEntropy(1);
    let mut ctrl = ControllerAuth::new(ctrl_cfg);
    let mut n = HostAuth::new(host(HashId::Sha512, DhGroup::Ffdhe4096), 1).negotiate();
    n[6] = 1;
    assert_eq!(ctrl.on_send(&n, &mut e), Err(FailureReason::ConcatMismatch));
    let f = Message::decode(&ctrl.on_receive(AL).unwrap(), Framing::Exact).unwrap();
    assert!(matches!(f, Message::Failure1(x) if x.reason == FailureReason::ConcatMismatch && x.t_id == 1));
}

/// A controller authenticated through a host state machine, and the
/// entropy source to continue with.
fn authenticated(cfg: Arc<AuthConfig>) -> (ControllerAuth, HostAuth, TestEntropy, Vec<u8>) {
    let mut e = TestEntropy(7);
    let mut ctrl = ControllerAuth::new(cfg.clone());
    let mut host = HostAuth::new(cfg, 5);
    ctrl.on_send(&host.negotiate(), &mut e).unwrap();
    let reply = host.on_message(&ctrl.on_receive(AL).unwrap(), &mut e).unwrap().unwrap();
    ctrl.on_send(&reply, &mut e).unwrap();
    if let Some(success2) = host.on_message(&ctrl.on_receive(AL).unwrap(), &mut e).unwrap() {
        assert!(!ctrl.is_authenticated(), "bidirectional: not before Success2");
        ctrl.on_send(&success2, &mut e).unwrap();
    }
    assert!(host.is_done());
    assert!(ctrl.is_authenticated());
    (ctrl, host, e, reply)
}

#[test]
fn a_replayed_reply_after_success_is_refused() {
    let cfg = pin(config(None), HashId::Sha256, DhGroup::Null);
    let (mut ctrl, _, mut e, reply) = authenticated(cfg);
    assert_eq!(ctrl.on_send(&reply, &mut e), Err(FailureReason::IncorrectMessage));
    let f = Message::decode(&ctrl.on_receive(AL).unwrap(), Framing::Exact).unwrap();
    assert!(matches!(f, Message::Failure1(x) if x.reason == FailureReason::IncorrectMessage));
    assert!(!ctrl.is_authenticated());
}

#[test]
fn a_reply_replayed_into_a_new_transaction_is_refused() {
    // A new Negotiate gets a new challenge: the old reply answers the old one.
    let cfg = pin(config(None), HashId::Sha256, DhGroup::Null);
    let (mut ctrl, _, mut e, reply) = authenticated(cfg.clone());
    let mut again = HostAuth::new(cfg, 5);
    ctrl.on_send(&again.negotiate(), &mut e).unwrap();
    assert!(
        ctrl.is_authenticated(),
        "re-authentication keeps the queue usable meanwhile"
    );
    ctrl.on_receive(AL).unwrap();
    assert_eq!(ctrl.on_send(&reply, &mut e), Err(FailureReason::Failed));
    assert!(
        !ctrl.is_authenticated(),
        "a failed re-authentication ends the queue's authentication"
    );
}

#[test]
fn reauthentication_succeeds() {
    let cfg = pin(config(Some(key(2, None))), HashId::Sha512, DhGroup::Ffdhe2048);
    let (ctrl, ..) = authenticated(cfg.clone());
    assert!(ctrl.is_authenticated());
    let (r, ctrl) = run(cfg.clone(), cfg);
    assert_eq!(r, Ok(()));
    assert!(ctrl.is_authenticated());
}

#[test]
fn a_reflected_challenge_is_refused() {
    // The host sends the controller's own C1 back as C2, hoping for R2 = f(C1).
    let cfg = pin(config(Some(key(2, None))), HashId::Sha256, DhGroup::Null);
    let mut e = TestEntropy(3);
    let mut ctrl = ControllerAuth::new(cfg.clone());
    let mut host = HostAuth::new(cfg, 1);
    ctrl.on_send(&host.negotiate(), &mut e).unwrap();
    let challenge = ctrl.on_receive(AL).unwrap();
    let Message::Challenge(c) = Message::decode(&challenge, Framing::Exact).unwrap() else {
        panic!()
    };
    let reply = host.on_message(&challenge, &mut e).unwrap().unwrap();
    let Message::Reply(mut r) = Message::decode(&reply, Framing::Exact).unwrap() else {
        panic!()
    };
    r.ctrl_challenge = Some(c.challenge.clone());
    assert_eq!(
        ctrl.on_send(&Message::Reply(r).encode(), &mut e),
        Err(FailureReason::Failed)
    );
    // And one key both ways is refused by configuration.
    let same = config(Some(key(1, Some(HashId::Sha256))));
    assert!(same.validate().unwrap_err().contains("reflection"));
    assert!(config(Some(key(2, None))).validate().is_ok());
}

#[test]
fn messages_out_of_turn_are_refused() {
    let cfg = pin(config(None), HashId::Sha256, DhGroup::Null);
    let mut e = TestEntropy(3);
    // Receive before anything: Failure1, incorrect message.
    let mut ctrl = ControllerAuth::new(cfg.clone());
    let f = Message::decode(&ctrl.on_receive(AL).unwrap(), Framing::Exact).unwrap();
    assert!(matches!(f, Message::Failure1(x) if x.reason == FailureReason::IncorrectMessage));
    // A Reply without a challenge.
    let reply = Message::Reply(Reply {
        t_id: 0,
        response: vec![0; 32],
        ctrl_challenge: None,
        seqnum: 0,
        dh_value: vec![],
    });
    assert_eq!(
        ctrl.on_send(&reply.encode(), &mut e),
        Err(FailureReason::IncorrectMessage)
    );
    // Success2 in a unidirectional transaction.
    let (mut ctrl, ..) = authenticated(cfg.clone());
    assert_eq!(
        ctrl.on_send(&Message::Success2(5).encode(), &mut e),
        Err(FailureReason::IncorrectMessage)
    );
    // A controller's message sent by the host; garbage; a wrong T_ID.
    let mut ctrl = ControllerAuth::new(cfg.clone());
    let mut host = HostAuth::new(cfg, 5);
    ctrl.on_send(&host.negotiate(), &mut e).unwrap();
    let challenge = ctrl.on_receive(AL).unwrap();
    assert_eq!(ctrl.on_send(&challenge, &mut e), Err(FailureReason::IncorrectMessage));
    assert_eq!(ctrl.on_send(&[1, 2, 3], &mut e), Err(FailureReason::IncorrectPayload));
    ctrl.on_send(&host.negotiate(), &mut e).unwrap();
    let challenge = ctrl.on_receive(AL).unwrap();
    let mut reply = host.on_message(&challenge, &mut e).unwrap().unwrap();
    reply[4] ^= 1;
    assert_eq!(ctrl.on_send(&reply, &mut e), Err(FailureReason::IncorrectMessage));
}

#[test]
fn a_short_receive_buffer_keeps_the_message() {
    let cfg = pin(config(None), HashId::Sha512, DhGroup::Ffdhe2048);
    let mut e = TestEntropy(3);
    let mut ctrl = ControllerAuth::new(cfg.clone());
    ctrl.on_send(&HostAuth::new(cfg, 1).negotiate(), &mut e).unwrap();
    assert_eq!(
        ctrl.on_receive(100),
        Err(ReceiveError::BufferTooSmall {
            al: 100,
            need: 16 + 64 + 256
        })
    );
    assert_eq!(ctrl.on_receive(AL).unwrap().len(), 16 + 64 + 256);
}

#[test]
fn the_host_refuses_bad_challenges() {
    let cfg = pin(config(None), HashId::Sha256, DhGroup::Ffdhe2048);
    let mut e = TestEntropy(3);
    let mut ctrl = ControllerAuth::new(cfg.clone());
    let mut host = HostAuth::new(cfg.clone(), 1);
    ctrl.on_send(&host.negotiate(), &mut e).unwrap();
    let mut challenge = ctrl.on_receive(AL).unwrap();
    // A public value of 1 forces the shared secret.
    let n = challenge.len();
    challenge[16 + 32..].fill(0);
    challenge[n - 1] = 1;
    let f = host.on_message(&challenge, &mut e).unwrap_err();
    assert_eq!(f.reason, FailureReason::IncorrectPayload);
    assert!(!f.from_controller);
    let Message::Failure2(f2) = Message::decode(&f.failure2.unwrap(), Framing::Exact).unwrap() else {
        panic!()
    };
    assert_eq!((f2.t_id, f2.reason), (1, FailureReason::IncorrectPayload));
    // A group the host did not offer.
    let mut host = HostAuth::new(pin(config(None), HashId::Sha256, DhGroup::Null), 1);
    host.negotiate();
    let f = host.on_message(&ctrl_challenge(&cfg), &mut e).unwrap_err();
    assert_eq!(f.reason, FailureReason::DhgroupUnusable);
    // Truncated, and a wrong transaction.
    let mut host = HostAuth::new(cfg.clone(), 2);
    host.negotiate();
    assert_eq!(
        host.on_message(&ctrl_challenge(&cfg)[..40], &mut e).unwrap_err().reason,
        FailureReason::IncorrectPayload
    );
    let mut host = HostAuth::new(cfg.clone(), 2);
    host.negotiate();
    assert_eq!(
        host.on_message(&ctrl_challenge(&cfg), &mut e).unwrap_err().reason,
        FailureReason::IncorrectMessage
    );
}

/// A challenge for transaction 1 from a fresh controller.
fn ctrl_challenge(cfg: &Arc<AuthConfig>) -> Vec<u8> {
    let mut e = TestEntropy(11);
    let mut ctrl = ControllerAuth::new(cfg.clone());
    ctrl.on_send(&HostAuth::new(cfg.clone(), 1).negotiate(), &mut e)
        .unwrap();
    ctrl.on_receive(AL).unwrap()
}

#[test]
fn controller_failure1_reaches_the_host() {
    let good = pin(config(None), HashId::Sha256, DhGroup::Null);
    let mut wrong = (*good).clone();
    wrong.host_key = key(9, None);
    let mut e = TestEntropy(3);
    let mut ctrl = ControllerAuth::new(good);
    let mut host = HostAuth::new(Arc::new(wrong), 4);
    ctrl.on_send(&host.negotiate(), &mut e).unwrap();
    let reply = host.on_message(&ctrl.on_receive(AL).unwrap(), &mut e).unwrap().unwrap();
    assert_eq!(ctrl.on_send(&reply, &mut e), Err(FailureReason::Failed));
    let f = host.on_message(&ctrl.on_receive(AL).unwrap(), &mut e).unwrap_err();
    assert!(f.from_controller);
    assert_eq!(f.reason, FailureReason::Failed);
    assert!(f.failure2.is_none());
    assert!(f.to_string().contains("controller refused"));
}

/// Drives one more transaction on an existing controller; the host's result.
fn transaction(ctrl: &mut ControllerAuth, host_cfg: Arc<AuthConfig>, e: &mut TestEntropy) -> Result<(), FailureReason> {
    let mut host = HostAuth::new(host_cfg, 9);
    let _ = ctrl.on_send(&host.negotiate(), e);
    loop {
        match host.on_message(&ctrl.on_receive(AL).unwrap(), e) {
            Ok(Some(send)) => {
                let _ = ctrl.on_send(&send, e);
                if host.is_done() {
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Err(f) => return Err(f.reason),
        }
    }
}

#[test]
fn a_key_change_applies_to_the_next_transaction() {
    let old = pin(config(Some(key(2, None))), HashId::Sha256, DhGroup::Null);
    let new = pin(
        AuthConfig::new(key(5, Some(HashId::Sha384)), Some(key(6, None)), HOSTNQN, SUBNQN),
        HashId::Sha256,
        DhGroup::Null,
    );
    let (mut ctrl, _, mut e, _) = authenticated(old.clone());
    ctrl.set_config(Some(new.clone()));
    assert!(
        ctrl.is_authenticated(),
        "a key change alone keeps the queue authenticated"
    );
    // The old keys no longer pass; the queue is then unauthenticated.
    assert_eq!(transaction(&mut ctrl, old, &mut e), Err(FailureReason::Failed));
    assert!(!ctrl.is_authenticated());
    // The new ones do.
    assert_eq!(ctrl.passed(), 1);
    assert_eq!(transaction(&mut ctrl, new.clone(), &mut e), Ok(()));
    assert!(ctrl.is_authenticated());
    assert_eq!(ctrl.passed(), 2, "the first transaction and this one");
    // A transaction under way keeps the keys it started with.
    let mut host = HostAuth::new(new.clone(), 10);
    ctrl.on_send(&host.negotiate(), &mut e).unwrap();
    ctrl.set_config(Some(pin(config(None), HashId::Sha256, DhGroup::Null)));
    let reply = host.on_message(&ctrl.on_receive(AL).unwrap(), &mut e).unwrap().unwrap();
    ctrl.on_send(&reply, &mut e).unwrap();
    let success2 = host.on_message(&ctrl.on_receive(AL).unwrap(), &mut e).unwrap().unwrap();
    ctrl.on_send(&success2, &mut e).unwrap();
    assert!(ctrl.is_authenticated());
}

#[test]
fn removed_keys_fail_the_next_transaction() {
    let cfg = pin(config(None), HashId::Sha256, DhGroup::Null);
    let (mut ctrl, _, mut e, _) = authenticated(cfg.clone());
    ctrl.set_config(None);
    assert!(ctrl.is_authenticated());
    assert_eq!(transaction(&mut ctrl, cfg, &mut e), Err(FailureReason::Failed));
    assert!(!ctrl.is_authenticated());
}

#[test]
fn an_abandoned_reauthentication_keeps_the_queue_authenticated() {
    let cfg = pin(config(None), HashId::Sha256, DhGroup::Null);
    let (mut ctrl, _, mut e, _) = authenticated(cfg.clone());
    assert!(!ctrl.in_progress());
    let mut host = HostAuth::new(cfg, 11);
    ctrl.on_send(&host.negotiate(), &mut e).unwrap();
    assert!(ctrl.in_progress());
    let challenge = ctrl.on_receive(AL).unwrap();
    assert!(ctrl.in_progress(), "waiting for the Reply");
    ctrl.abandon();
    assert!(!ctrl.in_progress());
    assert!(ctrl.is_authenticated());
    // The Reply that comes too late is out of turn.
    let reply = host.on_message(&challenge, &mut e).unwrap().unwrap();
    assert_eq!(ctrl.on_send(&reply, &mut e), Err(FailureReason::IncorrectMessage));
    assert!(!ctrl.is_authenticated());
}
