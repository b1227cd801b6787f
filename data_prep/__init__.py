"""Offline dataset building: the toy world and (later) real AVSpeech/VoxCeleb2 records."""
