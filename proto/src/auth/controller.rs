//! The controller's side of a DH-HMAC-CHAP transaction on one queue (NVMe
//! Base 2.0 section 8.13.5), fed the data of each Authentication Send and
//! asked for the data of each Authentication Receive:
//!
//! ```text
//! Send AUTH_Negotiate      -> Receive Challenge
//! Send Reply               -> Receive Success1   (unidirectional: done)
//! Send Success2            -> done               (bidirectional)
//! ```
//!
//! A bad or out-of-order message does not fail the command that carried it:
//! the next Authentication Receive returns AUTH_Failure1 with the reason,
//! as the specification wants, and the queue is not authenticated. An
//! AUTH_Failure2 from the host ends the transaction. An AUTH_Negotiate at
//! any point starts a new transaction (re-authentication): a queue already
//! authenticated stays so until that transaction fails.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::chap::{self, Transcript};
use super::dh::KeyPair;
use super::messages::{Challenge, Failure, Framing, Message, Negotiate, RESCODE_FAILED, Reply, Success1};
use super::{AuthConfig, DhGroup, Entropy, FailureReason, HashId};

/// Why an Authentication Receive cannot be answered with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// AL is smaller than the message waiting: Invalid Field, and the
    /// message stays for a Receive with a larger buffer.
    #[error("allocation length {al} is below the {need}-byte message")]
    BufferTooSmall {
        /// The host's allocation length.
        al: usize,
        /// The message's length.
        need: usize,
    },
}

#[derive(Debug)]
enum Step {
    /// Nothing under way (before the first Negotiate, or after a transaction).
    Idle,
    /// A message for the next Authentication Receive, then `after`.
    Send { message: Vec<u8>, after: After },
    /// Waiting for the host's Reply.
    AwaitReply,
    /// Waiting for the host's Success2 (bidirectional).
    AwaitSuccess2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    AwaitReply,
    /// Success1 sent: authenticated, unless bidirectional (then wait for Success2).
    Authenticated {
        bidirectional: bool,
    },
    /// Failure1 sent: the transaction is over.
    Failed,
}

/// What the controller keeps of the transaction under way.
struct Transaction {
    /// The keys and lists in force when the transaction started.
    cfg: Arc<AuthConfig>,
    t_id: u16,
    hash: HashId,
    keypair: Option<KeyPair>,
    c1: Zeroizing<Vec<u8>>,
    s1: u32,
}

/// One queue's authentication, controller side.
pub struct ControllerAuth {
    /// The keys and lists the next transaction starts with; `None`: the
    /// host's keys were removed, so no transaction can succeed.
    cfg: Option<Arc<AuthConfig>>,
    step: Step,
    tx: Option<Transaction>,
    authenticated: bool,
    /// Transactions passed, the first and every re-authentication.
    passed: u32,
    last_failure: Option<FailureReason>,
}

impl std::fmt::Debug for ControllerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerAuth")
            .field("step", &self.step)
            .field("authenticated", &self.authenticated)
            .finish_non_exhaustive()
    }
}

impl ControllerAuth {
    /// A queue that has not authenticated yet.
    pub fn new(cfg: Arc<AuthConfig>) -> Self {
        ControllerAuth {
            cfg: Some(cfg),
            step: Step::Idle,
            tx: None,
            authenticated: false,
            passed: 0,
            last_failure: None,
        }
    }

    /// Whether the queue completed a transaction successfully (and no later
    /// one failed).
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The keys and lists for transactions started from now on (the host's
    /// keys changed, `nvmf_subsystem_set_keys`); `None` when they were
    /// removed: a transaction started then fails with "failed" at the
    /// Reply, as SPDK's target fails one it finds no key for. The
    /// transaction under way, if any, keeps the keys it started with; the
    /// queue stays authenticated until the host re-authenticates.
    pub fn set_config(&mut self, cfg: Option<Arc<AuthConfig>>) {
        self.cfg = cfg;
    }

    /// How many transactions passed (the first and every re-authentication).
    pub fn passed(&self) -> u32 {
        self.passed
    }

    /// Whether a transaction is under way: a message waits for the next
    /// Authentication Receive, or the controller waits for the host's Reply
    /// or Success2. Its timeout runs while this holds (or while the queue
    /// is not authenticated).
    pub fn in_progress(&self) -> bool {
        !matches!(self.step, Step::Idle)
    }

    /// Drops the transaction under way (its timeout expired) without
    /// changing whether the queue is authenticated: a queue
    /// re-authenticating keeps the authentication it had, as SPDK's target
    /// keeps it; a late Reply or Success2 is then out of turn (AUTH_Failure1).
    pub fn abandon(&mut self) {
        self.step = Step::Idle;
        self.tx = None;
    }

    /// The reason of the last failed transaction, for the log.
    pub fn last_failure(&self) -> Option<FailureReason> {
        self.last_failure
    }

    /// The data of an Authentication Send. The command completes
    /// successfully whatever this returns: an `Err` (for the log) has
    /// already queued AUTH_Failure1 for the next Authentication Receive, or,
    /// for the host's own AUTH_Failure2, ended the transaction.
    ///
    /// # Errors
    /// The reason the message was refused.
    pub fn on_send(&mut self, data: &[u8], entropy: &mut dyn Entropy) -> Result<(), FailureReason> {
        let t_id_now = self.tx.as_ref().map_or(0, |t| t.t_id);
        let msg = match Message::decode(data, Framing::Exact) {
            Ok(m) => m,
            Err(reason) => {
                // The T_ID field is where every message has it, if it is there.
                let t_id = if data.len() >= 6 {
                    u16::from_le_bytes([data[4], data[5]])
                } else {
                    t_id_now
                };
                return Err(self.fail(t_id, reason));
            }
        };
        match (msg, &self.step) {
            (Message::Negotiate(n), _) => self.negotiate(&n, entropy),
            (Message::Failure2(f), _) => {
                self.step = Step::Idle;
                self.tx = None;
                self.authenticated = false;
                self.last_failure = Some(f.reason);
                Err(f.reason)
            }
            (Message::Reply(r), Step::AwaitReply) => self.reply(&r),
            (Message::Success2(t_id), Step::AwaitSuccess2) => {
                if t_id != t_id_now {
                    return Err(self.fail(t_id_now, FailureReason::IncorrectMessage));
                }
                self.step = Step::Idle;
                self.tx = None;
                self.authenticated = true;
                self.passed = self.passed.wrapping_add(1);
                Ok(())
            }
            // A Reply or Success2 out of turn (a replay after success
            // included), or a controller's own message sent back.
            (m, _) => Err(self.fail(m.t_id(), FailureReason::IncorrectMessage)),
        }
    }

    /// The data of an Authentication Receive of `al` bytes: the message
    /// waiting, or AUTH_Failure1 (incorrect message) when none is (the
    /// transaction then fails).
    ///
    /// # Errors
    /// [`ReceiveError::BufferTooSmall`]: complete with Invalid Field.
    pub fn on_receive(&mut self, al: usize) -> Result<Vec<u8>, ReceiveError> {
        if let Step::Send { message, .. } = &self.step
            && message.len() > al
        {
            return Err(ReceiveError::BufferTooSmall {
                al,
                need: message.len(),
            });
        }
        match std::mem::replace(&mut self.step, Step::Idle) {
            Step::Send { message, after } => {
                self.step = match after {
                    After::AwaitReply => Step::AwaitReply,
                    After::Authenticated { bidirectional: true } => Step::AwaitSuccess2,
                    After::Authenticated { bidirectional: false } => {
                        self.authenticated = true;
                        self.passed = self.passed.wrapping_add(1);
                        self.tx = None;
                        Step::Idle
                    }
                    After::Failed => Step::Idle,
                };
                Ok(message)
            }
            other => {
                let t_id = self.tx.as_ref().map_or(0, |t| t.t_id);
                self.step = other;
                self.fail(t_id, FailureReason::IncorrectMessage);
                self.on_receive(al)
            }
        }
    }

    /// Ends the transaction with `reason`: AUTH_Failure1 waits for the next
    /// Authentication Receive; the queue is no longer authenticated.
    fn fail(&mut self, t_id: u16, reason: FailureReason) -> FailureReason {
        let message = Message::Failure1(Failure {
            t_id,
            rescode: RESCODE_FAILED,
            reason,
        })
        .encode();
        self.step = Step::Send {
            message,
            after: After::Failed,
        };
        self.tx = None;
        self.authenticated = false;
        self.last_failure = Some(reason);
        reason
    }

    fn negotiate(&mut self, n: &Negotiate, entropy: &mut dyn Entropy) -> Result<(), FailureReason> {
        if n.sc_c != 0 {
            return Err(self.fail(n.t_id, FailureReason::ConcatMismatch));
        }
        let Some(cfg) = self.cfg.clone() else {
            // No key any more: nothing to check a Reply against. The
            // negotiation itself cannot tell, so fail now with the reason
            // the Reply would get.
            return Err(self.fail(n.t_id, FailureReason::Failed));
        };
        let Some(hash) = cfg.hashes.iter().copied().find(|h| n.hashes.contains(&h.id())) else {
            return Err(self.fail(n.t_id, FailureReason::HashUnusable));
        };
        let Some(group) = cfg.dhgroups.iter().copied().find(|g| n.dhgroups.contains(&g.id())) else {
            return Err(self.fail(n.t_id, FailureReason::DhgroupUnusable));
        };
        let mut c1 = Zeroizing::new(vec![0u8; hash.digest_len()]);
        entropy.fill(&mut c1);
        let mut s = [0u8; 4];
        entropy.fill(&mut s);
        // A sequence number of 0 means "none" in a Reply; never use it.
        let s1 = u32::from_le_bytes(s).max(1);
        let keypair = match group {
            DhGroup::Null => None,
            g => match KeyPair::generate(g, entropy) {
                Some(k) => Some(k),
                None => return Err(self.fail(n.t_id, FailureReason::Failed)),
            },
        };
        let message = Message::Challenge(Challenge {
            t_id: n.t_id,
            hash,
            dhgroup: group,
            seqnum: s1,
            challenge: c1.to_vec(),
            dh_value: keypair.as_ref().map(|k| k.public().to_vec()).unwrap_or_default(),
        })
        .encode();
        self.tx = Some(Transaction {
            cfg,
            t_id: n.t_id,
            hash,
            keypair,
            c1,
            s1,
        });
        self.step = Step::Send {
            message,
            after: After::AwaitReply,
        };
        Ok(())
    }

    fn reply(&mut self, r: &Reply) -> Result<(), FailureReason> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(self.fail(r.t_id, FailureReason::IncorrectMessage));
        };
        let (t_id, hash) = (tx.t_id, tx.hash);
        match self.verify_reply(tx, r) {
            Ok(ctrl_response) => {
                let bidirectional = ctrl_response.is_some();
                let message = Message::Success1(Success1 {
                    t_id,
                    hl: hash.digest_len() as u8,
                    response: ctrl_response.map(|z| z.to_vec()),
                })
                .encode();
                self.step = Step::Send {
                    message,
                    after: After::Authenticated { bidirectional },
                };
                Ok(())
            }
            Err(reason) => Err(self.fail(t_id, reason)),
        }
    }

    /// Checks R1 and, when the host asked, computes R2.
    fn verify_reply(&self, tx: &Transaction, r: &Reply) -> Result<Option<Zeroizing<Vec<u8>>>, FailureReason> {
        if r.t_id != tx.t_id {
            return Err(FailureReason::IncorrectMessage);
        }
        if r.response.len() != tx.hash.digest_len() {
            return Err(FailureReason::IncorrectPayload);
        }
        let session = match &tx.keypair {
            None if r.dh_value.is_empty() => None,
            None => return Err(FailureReason::IncorrectPayload),
            Some(k) => Some(k.shared_secret(&r.dh_value)?),
        };
        let cfg = &*tx.cfg;
        let t1 = Transcript {
            seqnum: tx.s1,
            t_id: tx.t_id,
            sc_c: 0,
            hostnqn: &cfg.hostnqn,
            subnqn: &cfg.subnqn,
        };
        let ca1 = chap::augmented_challenge(tx.hash, session.as_deref().map(Vec::as_slice), &tx.c1);
        let kh = cfg.host_key.transformed(&cfg.hostnqn);
        let expected = chap::host_response(tx.hash, &kh, &ca1, &t1);
        if !chap::responses_match(&expected, &r.response) {
            return Err(FailureReason::Failed);
        }
        let Some(c2) = &r.ctrl_challenge else {
            return Ok(None);
        };
        let Some(ctrl_key) = &cfg.ctrl_key else {
            // The host wants the controller authenticated and it has no key.
            return Err(FailureReason::Failed);
        };
        if chap::responses_match(c2, &tx.c1) {
            // The controller's own challenge reflected back at it.
            return Err(FailureReason::Failed);
        }
        let t2 = Transcript { seqnum: r.seqnum, ..t1 };
        let ca2 = chap::augmented_challenge(tx.hash, session.as_deref().map(Vec::as_slice), c2);
        let kc = ctrl_key.transformed(&cfg.subnqn);
        Ok(Some(chap::controller_response(tx.hash, &kc, &ca2, &t2)))
    }
}
