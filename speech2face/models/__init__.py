"""Networks: VGG-Face (the face-feature teacher) and, later, the voice encoder and face decoder."""
