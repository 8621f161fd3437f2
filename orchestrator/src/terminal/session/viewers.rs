//! The viewer side of a session: joining and leaving, acks and the ack
//! they add up to, stalls, and what each viewer's writer sends next; and
//! the state's bookkeeping behind them (`super` holds the link side).

use std::time::{Duration, Instant};

use smol::channel::Sender;

use super::{Hold, Joined, Link, Next, Session, Slot, State, CHUNK, STALL_BYTES};

impl Session {
    /// Add a viewer wanting output from `offset`; `link_conn` is the
    /// worker's live connection, if any.
    pub fn join(&self, offset: u64, wake: Sender<()>, link_conn: Option<u64>) -> Joined {
        let mut st = self.lock();
        let id = st.next_viewer;
        st.next_viewer += 1;
        let mut pos = offset;
        if st.placed && pos < st.mirror.start() {
            // Gone from the mirror, hence from the agent's scrollback too.
            pos = st.mirror.start();
        }
        st.claim_hold(offset);
        st.slots.push(Slot {
            id,
            pos,
            acked: pos,
            wake,
            told_online: true,
            progress_at: Instant::now(),
            kicked: None,
            told_viewers: 0,
            notes: Vec::new(),
        });
        st.idle_since = None;
        st.wake_all();
        let attach = match (link_conn, st.link) {
            (Some(conn), Link::Offline) if st.exit.is_none() && !st.closing => {
                st.link = Link::Attaching(conn);
                Some((conn, st.attach_from()))
            }
            _ => None,
        };
        Joined {
            viewer_id: id,
            offset: pos,
            end: st.received(),
            attach,
        }
    }

    /// A viewer left. True if the link should get an ack notice (it may
    /// have been the slowest).
    pub fn leave(&self, viewer_id: u64) -> bool {
        self.leave_expecting(viewer_id, false)
    }

    /// A viewer left; if `back` (its socket dropped without a close), it
    /// is expected back for the rejoin grace: until then the ack stays at
    /// or below what it had consumed. True if the link should get an ack
    /// notice.
    pub fn leave_expecting(&self, viewer_id: u64, back: bool) -> bool {
        let mut st = self.lock();
        let Some(i) = st.slots.iter().position(|s| s.id == viewer_id) else {
            return false;
        };
        let slot = st.slots.remove(i);
        if back && slot.kicked.is_none() && st.exit.is_none() {
            st.holds.push(Hold {
                pos: Some(slot.pos),
                acked: slot.acked,
                until: Instant::now() + self.rejoin,
            });
        }
        if st.slots.is_empty() {
            st.idle_since = Some(Instant::now());
        }
        st.wake_all();
        st.wants_notice()
    }

    /// Forget viewers expected back whose time is up. True if the link
    /// should get an ack notice.
    pub fn expire_holds(&self, now: Instant) -> bool {
        let mut st = self.lock();
        let before = st.holds.len();
        st.holds.retain(|h| h.until > now);
        before != st.holds.len() && st.wants_notice()
    }

    /// A viewer consumed output up to `offset`. True if the link should get
    /// an ack notice.
    pub fn ack(&self, viewer_id: u64, offset: u64) -> bool {
        let mut st = self.lock();
        let Some(slot) = st.slots.iter_mut().find(|s| s.id == viewer_id) else {
            return false;
        };
        let acked = offset.min(slot.pos);
        if acked > slot.acked {
            slot.acked = acked;
            slot.progress_at = Instant::now();
        }
        st.wants_notice()
    }

    /// The link task could not be told about an ack; let the next try.
    pub fn notice_lost(&self) {
        self.lock().ack_noticed = false;
    }

    /// Whether a viewer has held a full queue without progress for `limit`.
    pub fn stalled(&self, viewer_id: u64, now: Instant, limit: Duration) -> bool {
        let mut st = self.lock();
        let received = st.received();
        let Some(slot) = st.slots.iter_mut().find(|s| s.id == viewer_id) else {
            return false;
        };
        if received.saturating_sub(slot.acked) < STALL_BYTES {
            slot.progress_at = now;
            return false;
        }
        now.saturating_duration_since(slot.progress_at) >= limit
    }

    /// Disconnect a viewer with `reason` (its writer says so and closes).
    pub fn kick(&self, viewer_id: u64, reason: &'static str) {
        let mut st = self.lock();
        if let Some(slot) = st.slots.iter_mut().find(|s| s.id == viewer_id) {
            slot.kicked = Some(reason);
            let _ = slot.wake.try_send(());
        }
    }

    /// What viewer `viewer_id` should be sent next.
    pub fn next(&self, viewer_id: u64) -> Next {
        let mut st = self.lock();
        let online = matches!(st.link, Link::Online(_));
        let placed = st.placed;
        let start = st.mirror.start();
        let Some(i) = st.slots.iter().position(|s| s.id == viewer_id) else {
            return Next::Kicked("viewer unknown to its session");
        };
        if let Some(reason) = st.slots[i].kicked {
            return Next::Kicked(reason);
        }
        if st.exit.is_none() && st.slots[i].told_online != online {
            st.slots[i].told_online = online;
            return Next::Status { online };
        }
        let viewers = st.slots.iter().filter(|s| s.kicked.is_none()).count();
        if st.exit.is_none() && st.slots[i].told_viewers != viewers {
            st.slots[i].told_viewers = viewers;
            return Next::Viewers(viewers);
        }
        if !st.slots[i].notes.is_empty() {
            return Next::Note(st.slots[i].notes.remove(0));
        }
        if placed && st.slots[i].pos < start {
            st.slots[i].pos = start;
        }
        let pos = st.slots[i].pos;
        if let Some(bytes) = st.mirror.read(pos, CHUNK) {
            st.slots[i].pos += bytes.len() as u64;
            return Next::Data { offset: pos, bytes };
        }
        match &st.exit {
            Some(exit) => Next::Exited(exit.clone()),
            None => Next::Idle,
        }
    }
}

impl State {
    pub(super) fn received(&self) -> u64 {
        if self.placed {
            self.mirror.end()
        } else {
            0
        }
    }

    pub(super) fn on(&self, conn: u64) -> bool {
        matches!(self.link, Link::Attaching(c) | Link::Online(c) if c == conn)
    }

    pub(super) fn wake_all(&self) {
        for slot in &self.slots {
            let _ = slot.wake.try_send(());
        }
    }

    /// The lowest offset every viewer still reading, or expected back, has
    /// consumed, or what arrived when there is none: never above what
    /// arrived.
    pub(super) fn ack_target(&self) -> u64 {
        let received = self.received();
        let reading = self.slots.iter().filter(|s| s.kicked.is_none());
        reading
            .map(|s| s.acked)
            .chain(self.holds.iter().map(|h| h.acked))
            .min()
            .unwrap_or(received)
            .min(received)
    }

    /// Where `terminal.attach` starts: what the agent was last told is
    /// consumed (so its window stays where the viewers are; bytes already
    /// here come again and are dropped), within the mirror; 0 after a
    /// restart (everything the agent still holds, so every viewer's bytes
    /// come back).
    pub(super) fn attach_from(&self) -> u64 {
        if self.placed {
            self.ack_sent.clamp(self.mirror.start(), self.mirror.end())
        } else {
            0
        }
    }

    /// A viewer joins wanting output from `offset`: the one expected back
    /// nearest above it (it is likely that one) no longer holds the ack.
    fn claim_hold(&mut self, offset: u64) {
        let claimed = self
            .holds
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.pos.filter(|p| offset <= *p).map(|p| (p, i)))
            .min()
            .map(|(_, i)| i);
        if let Some(i) = claimed {
            self.holds.remove(i);
        }
    }

    pub(super) fn take_ack(&mut self, conn: u64) -> Option<u64> {
        // Not while attaching: the attach result may start a hold.
        if self.link != Link::Online(conn) || !self.placed {
            return None;
        }
        let target = self.ack_target().max(self.ack_sent);
        if target > self.ack_sent || self.ack_force {
            self.ack_force = false;
            self.ack_sent = target;
            return Some(target);
        }
        None
    }

    /// Whether to queue an ack notice on the link now (at most one queued).
    pub(super) fn wants_notice(&mut self) -> bool {
        let due = self.ack_force || self.ack_target() > self.ack_sent;
        if self.ack_noticed || !due || matches!(self.link, Link::Offline) {
            return false;
        }
        self.ack_noticed = true;
        true
    }
}
