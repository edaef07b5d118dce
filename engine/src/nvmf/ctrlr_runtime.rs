//! The reactor-bound side of a controller, installed by its queues'
//! Connects: the keep-alive timer, the channel that brings asynchronous
//! events to the admin queue's reactor, and the closer that reaches a queue
//! on whichever reactor it lives. [`Controller`] itself holds only plain
//! values and the opaque ports set here.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use lull_proto::target_queue::Response;
use lull_reactor::{Context, TimerId};
use lull_transport::conn::Responder;

use crate::nvmf::ctrlr::{Controller, QueueCloser};

/// Events buffered between a raiser (any thread) and the admin queue's reactor.
const EVENT_CHANNEL_DEPTH: usize = 8;

/// (Re)starts the keep-alive check of `ctrl` for `kato` on this reactor,
/// cancelling the one in `timer`: a check every tenth of KATO (at least
/// every 100 ms), so expiry is seen within KATO + KATO/10, tears the
/// controller down. A zero KATO checks nothing.
pub fn arm_keep_alive(cx: &mut Context, ctrl: &Arc<Controller>, kato: Duration, timer: &mut Option<TimerId>) {
    if let Some(t) = timer.take() {
        cx.cancel_timer(t);
    }
    if kato.is_zero() {
        return;
    }
    let period = (kato / 10).max(Duration::from_millis(100));
    let watched: Weak<Controller> = Arc::downgrade(ctrl);
    let own_id: Rc<Cell<Option<TimerId>>> = Rc::new(Cell::new(None));
    let own_id_inside = own_id.clone();
    let armed = cx.timer_periodic(period, move |cx| {
        let Some(ctrl) = watched.upgrade().filter(|c| !c.is_torn_down()) else {
            // The controller is gone: this timer has nothing left to watch.
            if let Some(id) = own_id_inside.get() {
                cx.cancel_timer(id);
            }
            return;
        };
        if let Some(kato) = ctrl.keep_alive_expired(Instant::now()) {
            ctrl.shut_down(&format!("no Keep Alive within KATO {} ms", kato.as_millis()));
        }
    });
    own_id.set(armed.as_ref().ok().copied());
    *timer = armed.ok();
}

/// Brings `ctrl`'s asynchronous events to this reactor (the admin queue's),
/// where each completes the oldest outstanding AER through `resp`, or waits
/// for the next one.
pub fn deliver_events(cx: &mut Context, ctrl: &Arc<Controller>, resp: &Responder) {
    let weak = Arc::downgrade(ctrl);
    let resp = resp.clone();
    let tx = cx.channel(EVENT_CHANNEL_DEPTH, move |cx: &mut Context, dw0: u32| {
        let Some(ctrl) = weak.upgrade() else { return };
        if let Some(cid) = ctrl.take_aer_for(dw0) {
            resp.respond(cx, Response::ok(cid).with_dw0(dw0));
        }
    });
    ctrl.set_event_sink(Arc::new(move |dw0| tx.try_send(dw0).is_ok()));
}

/// Closes the connection whose poller runs now, from any thread; `None`
/// outside a poller (a queue driven directly, as in tests).
pub fn queue_closer(cx: &Context) -> Option<QueueCloser> {
    let (reactor, poller) = (cx.handle(), cx.current_poller()?);
    Some(Box::new(move || {
        let _ = reactor.try_send(move |cx| {
            let _ = cx.unregister(poller);
        });
    }))
}
