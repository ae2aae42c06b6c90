"""Live rooms over Socket.IO: authenticated signaling, presence and the peers panel's triggers."""
