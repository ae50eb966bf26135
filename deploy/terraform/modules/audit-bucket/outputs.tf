output "bucket" {
  description = "The audit bucket's name."
  value       = aws_s3_bucket.trail.id
}

output "bucket_arn" {
  value = aws_s3_bucket.trail.arn
}

output "access_log_bucket" {
  description = "The bucket that receives the audit bucket's S3 server access logs."
  value       = aws_s3_bucket.access_logs.id
}

output "kms_key_arn" {
  description = "The SSE-KMS key of the bucket."
  value       = aws_kms_key.trail.arn
}

output "store_url" {
  description = "VERDICT_STORE for the gateway and the CronJob (add endpoint_url=... only for non-AWS endpoints)."
  value       = "s3://${aws_s3_bucket.trail.id}/${trimsuffix(var.store_prefix, "/")}?retention_days=${var.retention_days}"
}

output "writer_policy_arn" {
  value = var.create_iam_policies ? aws_iam_policy.writer[0].arn : null
}

output "prober_policy_arn" {
  value = var.create_iam_policies ? aws_iam_policy.prober[0].arn : null
}

output "reader_policy_arn" {
  value = var.create_iam_policies ? aws_iam_policy.reader[0].arn : null
}

output "bucket_policy" {
  description = "The bucket policy document (attached unless attach_bucket_policy = false)."
  value = templatefile("${path.module}/bucket-policy.json.tftpl", {
    bucket_arn             = local.bucket_arn
    objects_arn            = local.objects_arn
    minimum_retention_days = var.minimum_retention_days
    admin_role_arns        = local.admin_role_arns
  })
}
