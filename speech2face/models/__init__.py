"""Networks: VGG-Face (the face-feature teacher), the voice encoder, the face decoder and its
warp, their named sizes (`presets`), and `export`, the one way trained models are saved and loaded."""
