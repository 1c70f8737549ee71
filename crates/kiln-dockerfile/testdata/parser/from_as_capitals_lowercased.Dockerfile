FROM busybox as BUG_stage
FROM BUG_stage
