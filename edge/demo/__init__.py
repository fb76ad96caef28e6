"""`make demo`: a simulated store entrance, end to end, on a private Mosquitto."""
