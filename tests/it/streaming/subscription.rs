//! `taskOutput` in one process over a real WebSocket.
