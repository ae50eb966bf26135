"""S3 fixtures (moto server over real HTTP on loopback). Filled in by the S3 store work."""
