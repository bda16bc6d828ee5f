package twokey.storage_test

import data.twokey.storage

rc(type, after) := {"resource_changes": [{"address": sprintf("%s.b", [type]), "type": type, "change": {"actions": ["create"], "after": after}}]}

test_public_acl_denied if {
	storage.deny == {"aws_s3_bucket_acl.b: bucket ACL \"public-read\" makes it public"} with input as rc("aws_s3_bucket_acl", {"acl": "public-read"})
}

test_private_acl_allowed if {
	count(storage.deny) == 0 with input as rc("aws_s3_bucket_acl", {"acl": "private"})
}

test_public_access_block_must_block if {
	count(storage.deny) == 2 with input as rc("aws_s3_bucket_public_access_block", {"block_public_acls": false, "block_public_policy": true, "ignore_public_acls": true, "restrict_public_buckets": false})
	count(storage.deny) == 0 with input as rc("aws_s3_bucket_public_access_block", {"block_public_acls": true, "block_public_policy": true, "ignore_public_acls": true, "restrict_public_buckets": true})
}

test_gcs_all_users_denied if {
	count(storage.deny) == 1 with input as rc("google_storage_bucket_iam_member", {"member": "allUsers", "role": "roles/storage.objectViewer"})
	count(storage.deny) == 1 with input as rc("google_storage_bucket_iam_binding", {"members": ["user:a@example.com", "allAuthenticatedUsers"]})
	count(storage.deny) == 0 with input as rc("google_storage_bucket_iam_member", {"member": "user:a@example.com"})
}
