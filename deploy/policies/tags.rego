# Every taggable resource the plan creates or updates carries the tags the
# organisation bills and pages by. Edit required_tags to your own.
package twokey.tags

required_tags := {"owner", "cost-center"}

deny contains msg if {
	some rc in input.resource_changes
	some action in rc.change.actions
	action in {"create", "update"}
	after := rc.change.after
	"tags" in object.keys(after) # the resource type takes tags
	tags := object.union(obj(object.get(after, "tags", {})), obj(object.get(after, "tags_all", {})))
	missing := required_tags - object.keys(tags)
	count(missing) > 0
	msg := sprintf("%s: missing required tags %v", [rc.address, sort(missing)])
}

obj(x) := x if is_object(x)

obj(x) := {} if not is_object(x)
