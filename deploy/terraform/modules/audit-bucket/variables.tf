variable "bucket_name" {
  description = "Name of the audit-trail bucket (globally unique). Object Lock can only be enabled when a bucket is created."
  type        = string
}

variable "retention_days" {
  description = "Default COMPLIANCE retention of every object version, in days. Match the store URL's retention_days (Verdict's default: 2555, seven years). Nobody, not even the account root, can shorten it or delete a version before it ends."
  type        = number
  default     = 2555

  validation {
    condition     = var.retention_days >= 1 && floor(var.retention_days) == var.retention_days
    error_message = "retention_days must be a whole number of days >= 1."
  }
}

variable "minimum_retention_days" {
  description = "Writes and retention changes asking for fewer remaining days than this are denied by the bucket policy. Keep it one day below retention_days: S3 rounds the remaining time down."
  type        = number
  default     = 2554
}

variable "store_prefix" {
  description = "Key prefix of the trail inside the bucket (the path of the store URL s3://<bucket>/<prefix>)."
  type        = string
  default     = "trail"
}

variable "admin_role_arns" {
  description = "IAM roles still allowed to change the bucket policy, versioning and Object Lock configuration (break-glass). Everyone else is denied. The account root can always replace a bucket policy; Object Lock retention binds root too."
  type        = list(string)
  default     = []
}

variable "kms_break_glass_role_arn" {
  description = "The one IAM role that may schedule the deletion of the trail's KMS key, disable it or its rotation, or change its key policy; the key policy denies these to everyone else, the account root included. Create the key (first apply) and change its policy as this role: KMS refuses a key policy that would lock its creator out."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", var.kms_break_glass_role_arn))
    error_message = "kms_break_glass_role_arn must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the bucket's KMS key can be deleted (7-30). Deleting it makes every object unreadable: keep it at 30 and alert on ScheduleKeyDeletion."
  type        = number
  default     = 30
}

variable "create_iam_policies" {
  description = "Create the IAM policies for the gateway (writer), the immutability test (prober) and read-only verification/replay."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

variable "attach_bucket_policy" {
  description = "Attach the bucket policy (always, on AWS). Only for S3 emulators: moto evaluates Deny statements WITHOUT their conditions, so the conditional denies would refuse every write there."
  type        = bool
  default     = true
}

variable "access_log_bucket_name" {
  description = "Bucket for the trail bucket's S3 server access logs (created by this module). Default: <bucket_name>-access-logs."
  type        = string
  default     = null
}

variable "access_log_retention_days" {
  description = "Days the access logs are kept before the lifecycle expires them (default: seven years, as the trail)."
  type        = number
  default     = 2555
}
