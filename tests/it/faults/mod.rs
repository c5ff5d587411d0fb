//! Fault injection: real `taskrunner` processes, a private PostgreSQL and a
//! TCP proxy, hit by the faults production sees (a worker SIGKILLed, the
//! database restarted, the network to it cut or gone silent).
//!
//! What they prove: no single fault can stop the queue, starve it, lose a
//! task, or start a second attempt of a task whose worker is alive.

mod harness_smoke;
mod shutdown;
