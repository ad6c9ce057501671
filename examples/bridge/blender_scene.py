"""A small Blender scene built from scratch: a sphere, a row of cubes, a floor, a key light.

Used by ``examples/bridge/blender.toml`` (``scene = "blender_scene.py"``); the Blender server
runs it once at start in a fresh, empty file. Every object it names can then be reached by a
declared parameter path such as ``objects["Sphere"].location[2]``.
"""

import bpy

scene = bpy.context.scene

bpy.ops.mesh.primitive_plane_add(size=12, location=(0, 0, 0))
floor = bpy.context.object
floor.name = "Floor"

bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5, location=(1.8, -0.8, 0.5), segments=24, ring_count=12)
sphere = bpy.context.object
sphere.name = "Sphere"
mat = bpy.data.materials.new("SphereMat")
if mat.node_tree is None:  # Blender < 5 creates materials without nodes
    mat.use_nodes = True
mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.8, 0.3, 0.1, 1.0)
sphere.data.materials.append(mat)

bpy.ops.mesh.primitive_cube_add(size=0.6, location=(-2.6, 0.5, 0.3))
cubes = bpy.context.object
cubes.name = "Cubes"
array = cubes.modifiers.new("Array", "ARRAY")
array.count = 3
array.relative_offset_displace = (1.2, 0.0, 0.0)
cube_mat = bpy.data.materials.new("CubeMat")
if cube_mat.node_tree is None:
    cube_mat.use_nodes = True
cube_mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.05, 0.1, 0.6, 1.0)
cubes.data.materials.append(cube_mat)

key = bpy.data.lights.new("Key", "POINT")
key.energy = 600.0
key_obj = bpy.data.objects.new("Key", key)
key_obj.location = (2.0, -2.5, 4.0)
scene.collection.objects.link(key_obj)

fill = bpy.data.lights.new("Fill", "POINT")
fill.energy = 200.0
fill_obj = bpy.data.objects.new("Fill", fill)
fill_obj.location = (-3.0, -2.0, 3.0)
scene.collection.objects.link(fill_obj)

cam = bpy.data.cameras.new("Camera")
cam_obj = bpy.data.objects.new("Camera", cam)
cam_obj.location = (0.0, -7.5, 3.0)
cam_obj.rotation_euler = (1.25, 0.0, 0.0)
scene.collection.objects.link(cam_obj)
scene.camera = cam_obj
