# The S3 bucket that holds Verdict's audit trail (docs/audit-format.md, §12).
#
# What protects what:
#   * Object Lock in COMPLIANCE mode with a default retention: no version can be
#     deleted, nor its retention shortened or its mode changed, by anyone, until
#     it expires. Only possible on a bucket created with Object Lock.
#   * Versioning (required by Object Lock): an unconditional overwrite or a
#     delete only adds a version or a delete marker; the original stays
#     readable by its VersionId, which the index pins.
#   * The bucket policy below makes those two impossible too: every PutObject
#     must carry If-None-Match (s3:if-none-match), deletes and governance
#     bypass are denied to every principal, and retention can only be set in
#     COMPLIANCE mode with at least minimum_retention_days remaining.
#   * SSE-KMS with a dedicated, rotating customer-managed key. Deleting or
#     disabling that key would make every locked version unreadable (Object Lock
#     keeps the ciphertext, not the means to read it): its key policy denies
#     those actions to every principal, the account root included, except the
#     break-glass role, and Terraform refuses to destroy it.
#   * S3 server access logging of the trail bucket into a separate log bucket:
#     who read, wrote or tried to delete what, including refused requests.
#
# `verdict audit immutability-test` checks all of this from the outside every
# night and files signed evidence (deploy/kubernetes/base/cronjob-immutability.yaml).

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

locals {
  bucket_arn        = "arn:${data.aws_partition.current.partition}:s3:::${var.bucket_name}"
  objects_arn       = "${local.bucket_arn}/*"
  access_log_bucket = coalesce(var.access_log_bucket_name, "${var.bucket_name}-access-logs")
  # Without break-glass roles named, a role name nobody should create: the account
  # root can still replace the policy (it always can), nobody else can.
  admin_role_arns = jsonencode(length(var.admin_role_arns) > 0 ? var.admin_role_arns : [
    "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:role/verdict-audit-break-glass"
  ])
}

resource "aws_kms_key" "trail" {
  description             = "Verdict audit trail (${var.bucket_name}): SSE-KMS"
  key_usage               = "ENCRYPT_DECRYPT"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  # KMS checks that the creator may change this policy later (the lockout safety
  # check): create the key, and change its policy, as the break-glass role.
  policy = data.aws_iam_policy_document.trail_key.json
  tags   = var.tags

  # `terraform destroy` would schedule the deletion of the only key that can
  # decrypt the trail.
  lifecycle {
    prevent_destroy = true
  }
}

data "aws_iam_policy_document" "trail_key" {
  statement {
    # The default key policy: IAM policies (writer, reader, ...) decide who may use the key.
    sid       = "EnableIamPolicies"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    # Explicit denies beat every allow, IAM's included. PutKeyPolicy is among them:
    # whoever may rewrite the policy could drop this statement first.
    sid       = "DenyKeyDestructionExceptBreakGlass"
    effect    = "Deny"
    actions   = ["kms:ScheduleKeyDeletion", "kms:DisableKey", "kms:DisableKeyRotation", "kms:DeleteImportedKeyMaterial", "kms:PutKeyPolicy"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
    condition {
      test     = "ArnNotLike"
      variable = "aws:PrincipalArn"
      values   = [var.kms_break_glass_role_arn]
    }
  }
}

resource "aws_kms_alias" "trail" {
  name          = "alias/verdict-audit-${var.bucket_name}"
  target_key_id = aws_kms_key.trail.key_id
}

resource "aws_s3_bucket" "trail" {
  bucket              = var.bucket_name
  object_lock_enabled = true
  # Never let `terraform destroy` try to empty an audit bucket.
  force_destroy = false
  tags          = var.tags

  # An audit bucket is never destroyed by Terraform (it could not be emptied anyway
  # while versions are locked in COMPLIANCE mode).
  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_s3_bucket_versioning" "trail" {
  bucket = aws_s3_bucket.trail.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "trail" {
  bucket = aws_s3_bucket.trail.id
  rule {
    default_retention {
      mode = "COMPLIANCE"
      days = var.retention_days
    }
  }
  depends_on = [aws_s3_bucket_versioning.trail]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "trail" {
  bucket = aws_s3_bucket.trail.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.trail.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "trail" {
  bucket                  = aws_s3_bucket.trail.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "trail" {
  bucket = aws_s3_bucket.trail.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_policy" "trail" {
  count  = var.attach_bucket_policy ? 1 : 0
  bucket = aws_s3_bucket.trail.id
  policy = templatefile("${path.module}/bucket-policy.json.tftpl", {
    bucket_arn             = local.bucket_arn
    objects_arn            = local.objects_arn
    minimum_retention_days = var.minimum_retention_days
    admin_role_arns        = local.admin_role_arns
  })
  # The policy denies changing these afterwards (except to break-glass roles): set them first.
  depends_on = [aws_s3_bucket_public_access_block.trail, aws_s3_bucket_object_lock_configuration.trail, aws_s3_bucket_logging.trail]
}

# --- server access logs of the trail bucket ----------------------------------------------------------
# A bucket of its own: logging into the trail bucket would log its own writes, and
# S3 log delivery supports neither SSE-KMS nor an Object Lock default retention on
# the target bucket.

resource "aws_s3_bucket" "access_logs" {
  bucket        = local.access_log_bucket
  force_destroy = false
  tags          = var.tags

  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket                  = aws_s3_bucket.access_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    object_ownership = "BucketOwnerEnforced" # no ACLs: log delivery is granted by the bucket policy below
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256" # the only default encryption S3 log delivery supports
    }
  }
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  versioning_configuration {
    status = "Enabled" # an overwritten or deleted log stays readable until the lifecycle expires it
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = var.access_log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
  depends_on = [aws_s3_bucket_versioning.access_logs]
}

data "aws_iam_policy_document" "access_logs" {
  statement {
    sid       = "AllowLogDeliveryFromTheTrailBucketOnly"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [aws_s3_bucket.trail.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.access_logs.arn, "${aws_s3_bucket.access_logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "access_logs" {
  bucket     = aws_s3_bucket.access_logs.id
  policy     = data.aws_iam_policy_document.access_logs.json
  depends_on = [aws_s3_bucket_public_access_block.access_logs]
}

resource "aws_s3_bucket_logging" "trail" {
  bucket        = aws_s3_bucket.trail.id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "${var.bucket_name}/"
  # S3 refuses a target bucket that does not yet let the logging service write.
  depends_on = [aws_s3_bucket_policy.access_logs, aws_s3_bucket_ownership_controls.access_logs]
}

# --- IAM policies for the roles that use the bucket (attach them to IRSA / instance roles) -------

data "aws_iam_policy_document" "writer" {
  statement {
    sid       = "ListTheTrail"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration", "s3:GetBucketLocation"]
    resources = [local.bucket_arn]
  }
  statement {
    sid = "ReadAndCreateOnce"
    # PutObjectRetention is needed to send the Object Lock headers on PutObject;
    # the bucket policy keeps it to COMPLIANCE with the minimum retention.
    actions   = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention", "s3:PutObject", "s3:PutObjectRetention"]
    resources = [local.objects_arn]
  }
  statement {
    sid       = "UseTheTrailKey"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt", "kms:DescribeKey"]
    resources = [aws_kms_key.trail.arn]
  }
}

data "aws_iam_policy_document" "prober" {
  source_policy_documents = [data.aws_iam_policy_document.writer.json]
  statement {
    sid = "AttemptWhatMustBeRefused"
    # IAM allows the immutability test to *try* these, so that a refusal proves
    # the bucket (Object Lock and the bucket policy) refuses them, not IAM.
    actions   = ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention", "s3:GetBucketPolicy"]
    resources = [local.bucket_arn, local.objects_arn]
  }
}

data "aws_iam_policy_document" "reader" {
  statement {
    actions   = ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration"]
    resources = [local.bucket_arn]
  }
  statement {
    actions   = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention"]
    resources = [local.objects_arn]
  }
  statement {
    actions   = ["kms:Decrypt", "kms:DescribeKey"]
    resources = [aws_kms_key.trail.arn]
  }
}

resource "aws_iam_policy" "writer" {
  count       = var.create_iam_policies ? 1 : 0
  name        = "verdict-audit-writer-${var.bucket_name}"
  description = "Verdict gateway: read the trail, create objects once (If-None-Match, COMPLIANCE lock)"
  policy      = data.aws_iam_policy_document.writer.json
  tags        = var.tags
}

resource "aws_iam_policy" "prober" {
  count       = var.create_iam_policies ? 1 : 0
  name        = "verdict-audit-prober-${var.bucket_name}"
  description = "Verdict immutability test: writer rights plus attempts the bucket must refuse"
  policy      = data.aws_iam_policy_document.prober.json
  tags        = var.tags
}

resource "aws_iam_policy" "reader" {
  count       = var.create_iam_policies ? 1 : 0
  name        = "verdict-audit-reader-${var.bucket_name}"
  description = "Verdict verifier and examiners: read-only access to the trail"
  policy      = data.aws_iam_policy_document.reader.json
  tags        = var.tags
}
