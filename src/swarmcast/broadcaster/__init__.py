"""The broadcaster: RTMP in, transcoding ladder, HLS origin, P2P renditions."""
