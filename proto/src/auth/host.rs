//! The host's side of a DH-HMAC-CHAP transaction on one queue (NVMe Base
//! 2.0 section 8.13.5): it makes the data of each Authentication Send and
//! reads the data of each Authentication Receive.
//!
//! ```text
//! negotiate()            -> Send AUTH_Negotiate, then Receive
//! on_message(Challenge)  -> Send Reply, then Receive
//! on_message(Success1)   -> Send Success2 (bidirectional), or nothing: done
//! ```
//!
//! A failure says whether to send AUTH_Failure2 (the host refused something
//! the controller sent) or not (the controller sent AUTH_Failure1).

use std::sync::Arc;

use zeroize::Zeroizing;

use super::chap::{self, Transcript};
use super::dh::KeyPair;
use super::messages::{Failure, Framing, Message, Negotiate, RESCODE_FAILED, Reply};
use super::{AuthConfig, Entropy, FailureReason, HashId};

/// A transaction that did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFailure {
    /// Why.
    pub reason: FailureReason,
    /// True when the controller reported it (AUTH_Failure1).
    pub from_controller: bool,
    /// AUTH_Failure2 for an Authentication Send, when the host refused.
    pub failure2: Option<Vec<u8>>,
}

impl std::fmt::Display for HostFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.from_controller {
            write!(f, "the controller refused authentication: {}", self.reason)
        } else {
            write!(f, "the host refused the controller's message: {}", self.reason)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Start,
    AwaitChallenge,
    AwaitSuccess1,
    Done,
    Failed,
}

/// One queue's authentication, host side.
pub struct HostAuth {
    cfg: Arc<AuthConfig>,
    t_id: u16,
    step: Step,
    hash: Option<HashId>,
    /// R2 expected from the controller (bidirectional only).
    expected_r2: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for HostAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAuth")
            .field("t_id", &self.t_id)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl HostAuth {
    /// A transaction with identifier `t_id` (a host numbers its
    /// transactions; the controller echoes the number).
    pub fn new(cfg: Arc<AuthConfig>, t_id: u16) -> Self {
        HostAuth {
            cfg,
            t_id,
            step: Step::Start,
            hash: None,
            expected_r2: None,
        }
    }

    /// Whether the transaction succeeded.
    pub fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// AUTH_Negotiate: every hash and group the configuration allows, no
    /// secure channel concatenation.
    pub fn negotiate(&mut self) -> Vec<u8> {
        self.step = Step::AwaitChallenge;
        Message::Negotiate(Negotiate {
            t_id: self.t_id,
            sc_c: 0,
            hashes: self.cfg.hashes.iter().map(|h| h.id()).collect(),
            dhgroups: self.cfg.dhgroups.iter().map(|g| g.id()).collect(),
        })
        .encode()
    }

    /// The data of an Authentication Receive. `Ok(Some(data))`: send it
    /// with Authentication Send (a Reply, then Receive again; or Success2,
    /// and the transaction is done); `Ok(None)`: done.
    ///
    /// # Errors
    /// A [`HostFailure`]; send its `failure2` when there is one.
    pub fn on_message(&mut self, data: &[u8], entropy: &mut dyn Entropy) -> Result<Option<Vec<u8>>, HostFailure> {
        let msg = match Message::decode(data, Framing::Padded) {
            Ok(m) => m,
            Err(reason) => return Err(self.refuse(reason)),
        };
        if let Message::Failure1(f) = msg {
            self.step = Step::Failed;
            return Err(HostFailure {
                reason: f.reason,
                from_controller: true,
                failure2: None,
            });
        }
        if msg.t_id() != self.t_id {
            return Err(self.refuse(FailureReason::IncorrectMessage));
        }
        match (msg, self.step) {
            (Message::Challenge(c), Step::AwaitChallenge) => match self.reply(&c, entropy) {
                Ok(reply) => {
                    self.step = Step::AwaitSuccess1;
                    Ok(Some(reply))
                }
                Err(reason) => Err(self.refuse(reason)),
            },
            (Message::Success1(s), Step::AwaitSuccess1) => {
                let Some(hash) = self.hash else {
                    return Err(self.refuse(FailureReason::IncorrectMessage));
                };
                if usize::from(s.hl) != hash.digest_len() {
                    return Err(self.refuse(FailureReason::IncorrectPayload));
                }
                match (&self.expected_r2, &s.response) {
                    (None, _) => {
                        self.step = Step::Done;
                        Ok(None)
                    }
                    (Some(want), Some(got)) if chap::responses_match(want, got) => {
                        self.step = Step::Done;
                        Ok(Some(Message::Success2(self.t_id).encode()))
                    }
                    // No response, or a wrong one: the controller did not prove its key.
                    (Some(_), _) => Err(self.refuse(FailureReason::Failed)),
                }
            }
            _ => Err(self.refuse(FailureReason::IncorrectMessage)),
        }
    }

    fn refuse(&mut self, reason: FailureReason) -> HostFailure {
        self.step = Step::Failed;
        self.expected_r2 = None;
        HostFailure {
            reason,
            from_controller: false,
            failure2: Some(
                Message::Failure2(Failure {
                    t_id: self.t_id,
                    rescode: RESCODE_FAILED,
                    reason,
                })
                .encode(),
            ),
        }
    }

    fn reply(&mut self, c: &super::messages::Challenge, entropy: &mut dyn Entropy) -> Result<Vec<u8>, FailureReason> {
        let cfg = &*self.cfg;
        if !cfg.hashes.contains(&c.hash) {
            return Err(FailureReason::HashUnusable);
        }
        if !cfg.dhgroups.contains(&c.dhgroup) {
            return Err(FailureReason::DhgroupUnusable);
        }
        let (keypair, session) = match KeyPair::generate(c.dhgroup, entropy) {
            None => (None, None),
            Some(k) => {
                let s = k.shared_secret(&c.dh_value)?;
                (Some(k), Some(s))
            }
        };
        let session = session.as_deref().map(Vec::as_slice);
        let t1 = Transcript {
            seqnum: c.seqnum,
            t_id: self.t_id,
            sc_c: 0,
            hostnqn: &cfg.hostnqn,
            subnqn: &cfg.subnqn,
        };
        let kh = cfg.host_key.transformed(&cfg.hostnqn);
        let ca1 = chap::augmented_challenge(c.hash, session, &c.challenge);
        let response = chap::host_response(c.hash, &kh, &ca1, &t1);
        let (ctrl_challenge, seqnum) = match &cfg.ctrl_key {
            None => (None, 0),
            Some(ctrl_key) => {
                let mut c2 = Zeroizing::new(vec![0u8; c.hash.digest_len()]);
                entropy.fill(&mut c2);
                let mut s = [0u8; 4];
                entropy.fill(&mut s);
                let s2 = u32::from_le_bytes(s).max(1);
                let ca2 = chap::augmented_challenge(c.hash, session, &c2);
                let kc = ctrl_key.transformed(&cfg.subnqn);
                let t2 = Transcript { seqnum: s2, ..t1 };
                self.expected_r2 = Some(chap::controller_response(c.hash, &kc, &ca2, &t2));
                (Some(c2.to_vec()), s2)
            }
        };
        self.hash = Some(c.hash);
        Ok(Message::Reply(Reply {
            t_id: self.t_id,
            response: response.to_vec(),
            ctrl_challenge,
            seqnum,
            dh_value: keypair.map(|k| k.public().to_vec()).unwrap_or_default(),
        })
        .encode())
    }
}
