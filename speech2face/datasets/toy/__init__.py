"""The toy world: synthetic speakers whose voices and faces share latent attributes
(docs/toy_world.md). `world.build_toy_world` builds one."""
