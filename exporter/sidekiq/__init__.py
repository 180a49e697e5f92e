"""Everything that knows Sidekiq's Redis layout: key names, decoders and the reader."""
