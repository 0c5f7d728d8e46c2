//! The agent's network side lives in `locksmith_sim::net`, shared with the fleet simulator;
//! here only the apply thread's end of it.

use locksmith_agent::Event;
use locksmith_sim::net::{EventSink, Stopped};

use super::apply::Events;

impl EventSink for Events {
    fn send(&self, event: Event) -> Result<(), Stopped> {
        Events::send(self, event).map_err(|()| Stopped)
    }
}
