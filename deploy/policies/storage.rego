# No bucket is readable or writable by the public.
package twokey.storage

public_acls := {"public-read", "public-read-write", "authenticated-read"}

public_members := {"allUsers", "allAuthenticatedUsers"}

changed contains rc if {
	some rc in input.resource_changes
	some action in rc.change.actions
	action in {"create", "update"}
}

deny contains msg if {
	some rc in changed
	rc.type in {"aws_s3_bucket_acl", "aws_s3_bucket"}
	rc.change.after.acl in public_acls
	msg := sprintf("%s: bucket ACL %q makes it public", [rc.address, rc.change.after.acl])
}

deny contains msg if {
	some rc in changed
	rc.type == "aws_s3_bucket_public_access_block"
	some setting in ["block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"]
	rc.change.after[setting] == false
	msg := sprintf("%s: %s must be true", [rc.address, setting])
}

deny contains msg if {
	some rc in changed
	rc.type in {"google_storage_bucket_iam_member", "google_storage_bucket_iam_binding"}
	some member in array.concat([object.get(rc.change.after, "member", "")], object.get(rc.change.after, "members", []))
	member in public_members
	msg := sprintf("%s: grants %s access to the bucket", [rc.address, member])
}
