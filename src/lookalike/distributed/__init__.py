"""Running lookalike on existing distributed engines (Ray for embedding; Milvus lives in store/)."""
